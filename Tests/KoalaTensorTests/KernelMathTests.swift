import XCTest
import CKernels
import Foundation

/// The vectorised kb_* kernels against libm in Double.
final class KernelMathTests: XCTestCase {
    /// A dense grid over [lo, hi], endpoints included; its length is not a multiple of
    /// 8, so the ragged tail is covered too.
    private func grid(_ lo: Float, _ hi: Float, _ n: Int = 200_003) -> [Float] {
        (0..<n).map { lo + (hi - lo) * Float($0) / Float(n - 1) }
    }

    private func run(_ f: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void, _ x: [Float]) -> [Float] {
        var y = [Float](repeating: .nan, count: x.count)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { f(xp.baseAddress!, $0.baseAddress!, x.count) } }
        return y
    }

    /// Largest relative error (absolute where the reference is below `tiny`).
    private func check(_ name: String, _ f: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
                       _ ref: (Double) -> Double, _ x: [Float], maxRel: Double = 1e-6, tiny: Double = 1e-37,
                       file: StaticString = #filePath, line: UInt = #line) {
        let y = run(f, x)
        var worst = 0.0, at: Float = 0
        for i in 0..<x.count {
            let r = ref(Double(x[i]))
            let err = abs(Double(y[i]) - r) / max(abs(r), tiny)
            if !(err <= worst) { worst = err.isNaN ? .infinity : err; at = x[i] }
        }
        XCTAssertLessThanOrEqual(worst, maxRel, "\(name): relative error \(worst) at x = \(at)", file: file, line: line)
    }

    private var randomInputs: [Float] {
        var g = SystemRandomNumberGenerator()
        return (0..<100_001).map { _ in Float.random(in: -30...30, using: &g) }
    }

    func testExp() {
        check("exp", kb_exp, Foundation.exp, grid(-87, 88.7))
        check("exp near 0", kb_exp, Foundation.exp, grid(-1, 1))
        check("exp random", kb_exp, Foundation.exp, randomInputs)
        // Below the normal range results are subnormal (absolute error only) then 0.
        check("exp subnormal", kb_exp, Foundation.exp, grid(-103.9, -87.4, 10_001), maxRel: 3e-45, tiny: 1)
        let y = run(kb_exp, [100, -100, 89, 88.72, -120, 0, -.infinity, .infinity])
        XCTAssertEqual(y[0], .infinity); XCTAssertEqual(y[1], Float(Foundation.exp(-100.0)))
        XCTAssertEqual(y[2], .infinity); XCTAssertEqual(Double(y[3]) / Foundation.exp(Double(Float(88.72))), 1, accuracy: 1e-6)
        XCTAssertEqual(y[4], 0); XCTAssertEqual(y[5], 1); XCTAssertEqual(y[6], 0); XCTAssertEqual(y[7], .infinity)
    }

    func testTanh() {
        check("tanh", kb_tanh, Foundation.tanh, grid(-20, 20))
        check("tanh small", kb_tanh, Foundation.tanh, grid(-1, 1))
        check("tanh tiny", kb_tanh, Foundation.tanh, grid(-1e-4, 1e-4, 10_001))
        check("tanh random", kb_tanh, Foundation.tanh, randomInputs)
        XCTAssertEqual(run(kb_tanh, [20, -20, 1e5, -1e5, 1e-30, 0]), [1, -1, 1, -1, 1e-30, 0])
    }

    func testErf() {
        check("erf", kb_erf, Foundation.erf, grid(-6, 6))
        check("erf small", kb_erf, Foundation.erf, grid(-1.1, 1.1))
        check("erf tiny", kb_erf, Foundation.erf, grid(-1e-4, 1e-4, 10_001))
        check("erf random", kb_erf, Foundation.erf, randomInputs)
        XCTAssertEqual(run(kb_erf, [10, -10, 1e30, -1e30, 0]), [1, -1, 1, -1, 0])
    }

    func testSigmoid() {
        let ref: (Double) -> Double = { 1 / (1 + Foundation.exp(-$0)) }
        check("sigmoid", kb_sigmoid, ref, grid(-80, 80))
        check("sigmoid near 0", kb_sigmoid, ref, grid(-2, 2))
        check("sigmoid random", kb_sigmoid, ref, randomInputs)
        let y = run(kb_sigmoid, [100, -100, 0, 1e30, -1e30])
        XCTAssertEqual(y[0], 1); XCTAssertEqual(y[1], 0, accuracy: 1e-30); XCTAssertEqual(y[2], 0.5)
        XCTAssertEqual(y[3], 1); XCTAssertEqual(y[4], 0)
    }

    func testInPlaceCallsAreAllowed() {
        var x: [Float] = (0..<37).map { Float($0) / 10 - 1.5 }
        let expected = x.map { Float(Foundation.erf(Double($0))) }
        x.withUnsafeMutableBufferPointer { kb_erf($0.baseAddress!, $0.baseAddress!, 37) }
        for i in 0..<37 { XCTAssertEqual(x[i], expected[i], accuracy: 1e-6) }
    }
}
