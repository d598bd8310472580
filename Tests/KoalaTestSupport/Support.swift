import Foundation
import XCTest
import KoalaTensor

/// Reference data made by `tools/reference/` (PyTorch), stored as safetensors.
public enum Fixtures {
    public static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    public static func open(_ name: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(path: directory.appendingPathComponent("\(name).safetensors").path)
    }
}

/// A fresh folder under the temporary directory, named `prefix-<UUID>`, removed when `test` ends.
public func scratchDirectory(_ test: XCTestCase, prefix: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    return dir
}

/// Writes `data` to `url`, creating the folders it needs first.
public func writeFile(_ data: Data, to url: URL) throws {
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try data.write(to: url)
}

/// Max-abs and relative comparison that reports where two tensors differ.
public func assertClose(_ actual: Tensor, _ expected: Tensor, atol: Float = 1e-5, rtol: Float = 1e-4,
                 _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "shape \(message())", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let a = actual.toArray(), e = expected.toArray()
    var worst = 0, worstExcess: Float = 0
    for i in 0..<a.count {
        let excess = abs(a[i] - e[i]) - (atol + rtol * abs(e[i]))
        if !(excess <= worstExcess) { worstExcess = excess.isNaN ? .infinity : excess; worst = i }
    }
    if worstExcess > 0 {
        XCTFail("\(message()): element \(worst) is \(a[worst]), expected \(e[worst]) (atol \(atol), rtol \(rtol))", file: file, line: line)
    }
}

/// Finite-difference gradient check.
///
/// The scalar probed is L = Σ f(x) · w for a fixed random `w`, accumulated in Double.
/// Ops run in float32, so central differences with step `eps` carry a rounding error
/// of about 1e-7 · |L| / eps plus a truncation error of O(eps²); with inputs and `w`
/// of order 1, eps = 1e-2 keeps both near 1e-4, which the default tolerances
/// (atol 2e-3, rtol 2e-2) cover with margin while still catching any wrong term.
public func gradCheck(_ inputs: [Tensor], eps: Float = 1e-2, atol: Double = 2e-3, rtol: Double = 2e-2,
               maxProbes: Int = 64, seed: UInt64 = 7,
               file: StaticString = #filePath, line: UInt = #line,
               _ f: ([Tensor]) -> Tensor) {
    var rng = RandomGenerator(seed: seed)
    let probeOut = noGrad { f(inputs) }
    let w = Tensor.randn(probeOut.shape, generator: &rng)
    let wv = w.toArray()
    func loss() -> Double {
        let out = noGrad { f(inputs) }.toArray()
        var acc = 0.0
        for i in 0..<out.count { acc += Double(out[i]) * Double(wv[i]) }
        return acc
    }
    for t in inputs { t.requiresGrad = true; t.grad = nil }
    let out = f(inputs)
    out.backward(w)
    for (ti, t) in inputs.enumerated() {
        precondition(t.isContiguous, "gradCheck perturbs contiguous inputs")
        guard let g = t.grad else { XCTFail("input \(ti) got no gradient", file: file, line: line); continue }
        XCTAssertEqual(g.shape, t.shape, file: file, line: line)
        let analytic = g.toArray()
        let n = t.count
        let probes = n <= maxProbes ? Array(0..<n) : (0..<maxProbes).map { _ in rng.int(below: n) }
            for i in probes {
            let saved = t.data[i]
            t.data[i] = saved + eps
            let lp = loss()
            t.data[i] = saved - eps
            let lm = loss()
            t.data[i] = saved
            let numeric = (lp - lm) / (2 * Double(eps))
            let a = Double(analytic[i])
            if abs(a - numeric) > atol + rtol * abs(numeric) {
                XCTFail("input \(ti) element \(i): analytic grad \(a), numeric \(numeric)", file: file, line: line)
                return
            }
        }
    }
}

extension Tensor {
    public static func randn(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = RandomGenerator(seed: seed)
        return Tensor.randn(shape, generator: &rng)
    }
}

/// Mean and worst absolute difference, in 8-bit units, between an 8-bit image and a
/// reference image's values (0…255 as float).
public func imageDifference(_ pixels: [UInt8], _ expected: ArraySlice<Float>) -> (mean: Double, worst: Float) {
    var total = 0.0, worst: Float = 0
    for (a, b) in zip(pixels, expected) {
        let d = abs(Float(a) - b)
        total += Double(d)
        worst = max(worst, d)
    }
    return (total / Double(max(expected.count, 1)), worst)
}

/// Bounds both the mean and the worst pixel of `imageDifference`, since a mean alone hides
/// a few wrong pixels. Returns them for callers that also print them.
@discardableResult
public func assertImageMatches(_ pixels: [UInt8], _ expected: ArraySlice<Float>, mean maxMean: Double = 1.0,
                               worst maxWorst: Float, _ message: @autoclosure () -> String = "",
                               file: StaticString = #filePath, line: UInt = #line) -> (mean: Double, worst: Float) {
    XCTAssertEqual(pixels.count, expected.count, "pixel count \(message())", file: file, line: line)
    let (mean, worst) = imageDifference(pixels, expected)
    XCTAssertLessThanOrEqual(mean, maxMean, "mean abs difference \(mean)/255 (worst \(worst)) \(message())", file: file, line: line)
    XCTAssertLessThanOrEqual(worst, maxWorst, "worst pixel \(worst)/255 (mean \(mean)) \(message())", file: file, line: line)
    return (mean, worst)
}

/// RGB bytes of a gradient photo that differs with `seed` (the subject tests' photos,
/// through the CLI and the HTTP API alike).
public func gradientPixels(seed: Int, width: Int, height: Int) -> [UInt8] {
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
        for x in 0..<width {
            let i = 3 * (y * width + x)
            pixels[i] = UInt8(truncatingIfNeeded: x + 37 * seed)
            pixels[i + 1] = UInt8(truncatingIfNeeded: y * 2 + 11 * seed)
            pixels[i + 2] = UInt8(truncatingIfNeeded: (x ^ y) + seed)
        }
    }
    return pixels
}
