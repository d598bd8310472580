import Foundation

/// Where a pipeline or training loop draws its random tensors from, so a caller can
/// choose between the native generator and the PyTorch-compatible one (`--rng`).
public protocol TensorRandomSource: Sendable {
    /// Standard normal samples, float32, contiguous.
    mutating func randn(_ shape: [Int]) -> Tensor
    /// Uniform samples in [0, 1), float32, contiguous.
    mutating func rand(_ shape: [Int]) -> Tensor
    /// `count` uniform integers in `low..<high`.
    mutating func randint(low: Int, high: Int, count: Int) -> [Int]
}

extension RandomGenerator: TensorRandomSource {
    public mutating func randn(_ shape: [Int]) -> Tensor { Tensor.randn(shape, generator: &self) }
    public mutating func rand(_ shape: [Int]) -> Tensor { Tensor.rand(shape, generator: &self) }
    public mutating func randint(low: Int, high: Int, count: Int) -> [Int] {
        boundaryCheck(low < high, "randint needs low < high, got \(low)..<\(high)")
        return (0..<count).map { _ in low + int(below: high - low) }
    }
}

/// A random source that reproduces PyTorch's CPU generator bit for bit:
/// `TorchGenerator(seed: s)` draws what `torch.Generator().manual_seed(s)` draws with
/// `torch.randn`, `torch.rand` and `torch.randint` (float32 / int64, x86 PyTorch),
/// including how consecutive calls share one stream.
///
/// What it reproduces:
/// - The engine: MT19937 seeded with the low 32 bits of the seed (so `2^32 + 5` and `5`
///   give the same stream). 32-bit draws come straight from it; 64-bit draws combine two,
///   the first as the high word.
/// - `rand`: the low 24 bits of one draw, times 2^-24.
/// - `randn` with 16 or more elements: PyTorch first fills the whole tensor with `rand`
///   uniforms, then turns each chunk of 16 into normals with Box–Muller (the first 8 give
///   the radii, the last 8 the angles). If the size is not a multiple of 16, 16 fresh
///   uniforms are drawn for the last 16 elements, which are transformed again. The
///   logarithm, sine and cosine are the Cephes polynomials of PyTorch's AVX2 kernel in
///   float32, with the fused multiply-adds its compiled code uses.
/// - `randn` with fewer than 16 elements: one double-precision Box–Muller pair per two
///   values from two 53-bit uniforms; the second value of a pair is kept on the generator
///   and returned by the next small draw, even after other calls in between (PyTorch's
///   `next_double_normal_sample`). Large `randn` calls neither use nor clear it.
/// - `randint`: one 32-bit draw modulo the range (a 64-bit draw for ranges of 2^32 or
///   more), plus `low`.
///
/// Not reproduced: PyTorch builds without AVX2 (e.g. ARM) compute the large `randn` with
/// libm instead of the AVX2 polynomials, so their values differ in the last bits; float16
/// and bfloat16 `randn` draw the tail uniforms in a different order.
public struct TorchGenerator: TensorRandomSource, Equatable {
    /// PyTorch's `at::mt19937` is the standard MT19937, seeded from the low 32 bits.
    private var engine: RandomGenerator
    /// The second value of the last scalar Box–Muller pair, returned by the next scalar draw.
    private var cachedNormal: Double?
    /// The seed as given (PyTorch's `initial_seed()`); only its low 32 bits seed the engine.
    public let seed: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        engine = RandomGenerator(seed: UInt64(UInt32(truncatingIfNeeded: seed)))
        cachedNormal = nil
    }

    /// One 32-bit draw (PyTorch's `random()`).
    public mutating func nextUInt32() -> UInt32 { engine.nextUInt32() }

    /// One 64-bit draw from two 32-bit draws, the first as the high half (PyTorch's `random64()`).
    public mutating func nextUInt64() -> UInt64 {
        let hi = UInt64(engine.nextUInt32())
        return hi << 32 | UInt64(engine.nextUInt32())
    }

    /// Uniform float in [0, 1) from the low 24 bits of one draw.
    public mutating func uniformFloat() -> Float {
        Float(engine.nextUInt32() & 0xFF_FFFF) * (1.0 / 16_777_216.0)
    }

    /// Uniform double in [0, 1) from the low 53 bits of a 64-bit draw.
    public mutating func uniformDouble() -> Double {
        Double(nextUInt64() & (1 << 53 - 1)) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One standard normal the way PyTorch draws tensors of fewer than 16 elements.
    public mutating func scalarNormal() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = uniformDouble(), u2 = uniformDouble()
        let radius = (-2.0 * log1p(-u2)).squareRoot()
        let theta = 2.0 * Double.pi * u1
        cachedNormal = radius * sin(theta)
        return radius * cos(theta)
    }

    /// `torch.randn(shape, generator=g)` (float32).
    public mutating func randn(_ shape: [Int]) -> Tensor {
        let out = Tensor(empty: shape)
        let n = out.count
        let data = out.data
        if n < 16 {
            // `+ 0` mirrors PyTorch's `value * std + mean` with std 1, mean 0 (turns -0 into +0).
            for i in 0..<n { data[i] = Float(scalarNormal() + 0) }
            return out
        }
        for i in 0..<n { data[i] = uniformFloat() }
        var start = 0
        while start + 16 <= n {
            TorchGenerator.boxMuller16(data + start)
            start += 16
        }
        if n % 16 != 0 {
            let tail = data + (n - 16)
            for i in 0..<16 { tail[i] = uniformFloat() }
            TorchGenerator.boxMuller16(tail)
        }
        return out
    }

    /// `torch.rand(shape, generator=g)` (float32).
    public mutating func rand(_ shape: [Int]) -> Tensor {
        let out = Tensor(empty: shape)
        let data = out.data
        for i in 0..<out.count { data[i] = uniformFloat() }
        return out
    }

    /// `torch.randint(low, high, (count,), generator=g)` (int64).
    public mutating func randint(low: Int, high: Int, count: Int) -> [Int] {
        boundaryCheck(low < high, "randint needs low < high, got \(low)..<\(high)")
        let range = UInt64(bitPattern: Int64(high) &- Int64(low))
        return (0..<count).map { _ in
            let draw = range >= 1 << 32 ? nextUInt64() : UInt64(nextUInt32())
            return Int(Int64(bitPattern: (draw % range) &+ UInt64(bitPattern: Int64(low))))
        }
    }

    // MARK: the vectorised Box–Muller of PyTorch's AVX2 kernel, one lane at a time

    /// Turns 16 uniforms in [0, 1) into 16 normals in place: element j and j + 8 come
    /// from radius(1 - u[j]) and angle(2π u[j + 8]).
    static func boxMuller16(_ data: UnsafeMutablePointer<Float>) {
        let twoPi = Float(2.0 * Double.pi)
        for j in 0..<8 {
            let radius = (-2 * cephesLog(1 - data[j])).squareRoot()
            let (s, c) = cephesSinCos(twoPi * data[j + 8])
            // The kernel ends with fma(n, std, mean), std 1 and mean 0: n + 0.
            data[j] = radius * c + 0
            data[j + 8] = radius * s + 0
        }
    }

    // The constants are double literals rounded to float, as in the C source.
    private static let sqrtHalf = Float(0.707106781186547524 as Double)
    private static let logP: [Float] = [
        7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
        -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1,
    ].map { (v: Double) in Float(v) }
    private static let logQ1 = Float(-2.12194440e-4 as Double)
    private static let logQ2 = Float(0.693359375 as Double)

    /// Natural log for x in [2^-24, 1] (the kernel's only inputs): Cephes logf as
    /// PyTorch's `log256_ps`, with the multiply-adds GCC fused in the AVX2 build.
    static func cephesLog(_ input: Float) -> Float {
        let bits = input.bitPattern
        var e = Float(Int32(bitPattern: bits >> 23) - 0x7F) + 1
        // Mantissa with the exponent of 0.5: m in [0.5, 1).
        let m = Float(bitPattern: (bits & ~0x7F80_0000) | Float(0.5).bitPattern)
        let below = m < sqrtHalf
        if below { e -= 1 }
        let x = (m - 1) + (below ? m : 0)
        let z = x * x
        var y = logP[0]
        for k in 1...8 { y = logP[k].addingProduct(y, x) }
        y = y * x
        y = (e * logQ1).addingProduct(y, z)
        y = y.addingProduct(-z, 0.5)
        return (x + y).addingProduct(e, logQ2)
    }

    private static let minusDP1 = Float(-0.78515625 as Double)
    private static let minusDP2 = Float(-2.4187564849853515625e-4 as Double)
    private static let minusDP3 = Float(-3.77489497744594108e-8 as Double)
    private static let sinP0 = Float(-1.9515295891E-4 as Double)
    private static let sinP1 = Float(8.3321608736E-3 as Double)
    private static let sinP2 = Float(-1.6666654611E-1 as Double)
    private static let cosP0 = Float(2.443315711809948E-005 as Double)
    private static let cosP1 = Float(-1.388731625493765E-003 as Double)
    private static let cosP2 = Float(4.166664568298827E-002 as Double)
    private static let fourOverPi = Float(1.27323954473516 as Double)

    /// Sine and cosine for x >= 0 (angles in [0, 2π]): Cephes sinf/cosf as PyTorch's
    /// `sincos256_ps`, with the multiply-adds GCC fused in the AVX2 build.
    static func cephesSinCos(_ angle: Float) -> (sin: Float, cos: Float) {
        precondition(angle >= 0, "cephesSinCos handles the non-negative angles of Box–Muller only")
        // Octant j (rounded up to even) and the reduced argument x = angle - j·π/4,
        // subtracted in three parts for precision.
        let j = (Int32(angle * fourOverPi) + 1) & ~1
        let jf = Float(j)
        var x = angle.addingProduct(jf, minusDP1)
        x = x.addingProduct(jf, minusDP2)
        x = x.addingProduct(jf, minusDP3)
        let z = x * x
        let half = z * 0.5
        var cosPoly = cosP1.addingProduct(cosP0, z)
        cosPoly = cosP2.addingProduct(cosPoly, z)
        cosPoly = cosPoly * z
        cosPoly = (-half).addingProduct(z, cosPoly) + 1
        var sinPoly = sinP1.addingProduct(sinP0, z)
        sinPoly = sinP2.addingProduct(sinPoly, z)
        sinPoly = x.addingProduct(x, z * sinPoly)
        // Octants 1, 2, 5, 6 swap the polynomials; the kernel's blend adds a zero (+0).
        let swap = j & 2 != 0
        var s = (swap ? cosPoly : sinPoly) + 0
        var c = (swap ? sinPoly : cosPoly) + 0
        if j & 4 != 0 { s = -s }
        if (j &- 2) & 4 == 0 { c = -c }
        return (s, c)
    }
}
