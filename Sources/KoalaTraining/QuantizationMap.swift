import KoalaTensor

/// The 256-entry "dynamic" quantization maps of bitsandbytes (`create_dynamic_map`).
///
/// Values are built in float32 exactly as bitsandbytes builds them with PyTorch on CPU
/// (including how `torch.linspace` rounds), so the maps are bit-identical to the
/// reference and quantized optimizer states decode to the same numbers.
public enum QuantizationMap {
    /// Signed map (first Adam moment): 127 positive and 127 negative values spread over
    /// seven decades, plus 0 and 1, sorted.
    public static let signed: [Float] = dynamic(signed: true)
    /// Unsigned map (second Adam moment): 254 positive values over seven decades plus 0 and 1.
    public static let unsigned: [Float] = dynamic(signed: false)

    /// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits, total_bits)`.
    ///
    /// For each exponent `i` the fraction interval [0.1, 1] is cut into
    /// `2^(i + nonSignBits - maxExponentBits)` equal parts (twice as many when unsigned);
    /// the part midpoints scaled by `10^(i - maxExponentBits + 1)` are the codes.
    public static func dynamic(signed: Bool, maxExponentBits: Int = 7, totalBits: Int = 8) -> [Float] {
        precondition(maxExponentBits >= 1 && maxExponentBits < totalBits, "need 1 <= maxExponentBits < totalBits")
        var data: [Double] = []
        let nonSignBits = totalBits - 1
        let additionalItems = (1 << (nonSignBits - maxExponentBits)) - 1
        func appendMeans(_ items: Int, exponent i: Int) {
            let boundaries = linspace(0.1, 1, count: items)
            // Python's 10 ** k is an exact int for k >= 0 and the nearest double otherwise;
            // PyTorch rounds it to float32 before multiplying the float32 means.
            let k = -(maxExponentBits - 1) + i
            let scale = Float(k >= 0 ? pow10(k) : Double("1e-\(-k)")!)
            for j in 0..<(items - 1) {
                let v = scale * ((boundaries[j] + boundaries[j + 1]) / 2)
                data.append(Double(v))
                if signed { data.append(Double(-v)) }
            }
        }
        for i in 0..<maxExponentBits {
            let items = signed ? (1 << (i + nonSignBits - maxExponentBits)) + 1
                               : (1 << (i + nonSignBits - maxExponentBits + 1)) + 1
            appendMeans(items, exponent: i)
        }
        if additionalItems > 0 { appendMeans(additionalItems + 1, exponent: maxExponentBits - 1) }
        data.append(0)
        data.append(1)
        precondition(data.count <= 256, "dynamic map has \(data.count) entries, more than 256")
        while data.count < 256 { data.append(0) }
        return data.sorted().map { Float($0) }
    }

    /// `torch.linspace(start, end, count, dtype=float32)` on CPU: a float32 step, the
    /// first half counted up from `start` and the second half down from `end`, each
    /// element one fused multiply-add.
    static func linspace(_ start: Float, _ end: Float, count: Int) -> [Float] {
        if count == 1 { return [start] }
        let step = (end - start) / Float(count - 1)
        let half = count / 2
        return (0..<count).map { i in
            i < half ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(count - i - 1))
        }
    }

    private static func pow10(_ k: Int) -> Double { (0..<k).reduce(1.0) { acc, _ in acc * 10 } }
}
