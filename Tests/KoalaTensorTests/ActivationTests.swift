import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class ActivationTests: XCTestCase {
    func testActivationsMatchTorch() throws {
        try checkParity("sigmoid", inputs: ["x"]) { $0[0].sigmoid() }
        try checkParity("silu", inputs: ["x"]) { $0[0].silu() }
        try checkParity("gelu", inputs: ["x"]) { $0[0].gelu() }
        try checkParity("gelu_tanh", inputs: ["x"]) { $0[0].gelu(approximate: .tanh) }
        try checkParity("quick_gelu", inputs: ["x"]) { $0[0].quickGELU() }
        try checkParity("geglu", inputs: ["x"]) { $0[0].geglu() }
        try checkParity("geglu_tanh", inputs: ["x"]) { $0[0].geglu(approximate: .tanh) }
    }

    func testActivationGradients() {
        let x = { Tensor.randn([3, 7], seed: $0) }
        gradCheck([x(1)]) { $0[0].sigmoid() }
        gradCheck([x(2)]) { $0[0].silu() }
        gradCheck([x(3)]) { $0[0].gelu() }
        gradCheck([x(4)]) { $0[0].gelu(approximate: .tanh) }
        gradCheck([x(5)]) { $0[0].quickGELU() }
        gradCheck([Tensor.randn([2, 3, 8], seed: 6)]) { $0[0].geglu() }
        gradCheck([Tensor.randn([2, 3, 8], seed: 7)]) { $0[0].geglu(approximate: .tanh) }
    }

    /// Large inputs (parallel chunks, the backward scratch loop) against the formulas
    /// evaluated in Double with libm.
    func testLargeInputsMatchDoubleFormulas() {
        var rng = RandomGenerator(seed: 9)
        let x = Tensor.randn([70_001], generator: &rng) * 4
        x.requiresGrad = true
        let y = x.gelu()
        y.backward(Tensor.ones(y.shape))
        let xs = x.toArray(), ys = y.toArray(), gs = x.grad!.toArray()
        for i in 0..<xs.count {
            let v = Double(xs[i])
            let cdf = 0.5 * (1 + erf(v / 2.0.squareRoot()))
            let pdf = Foundation.exp(-0.5 * v * v) / (2 * Double.pi).squareRoot()
            XCTAssertEqual(Double(ys[i]), v * cdf, accuracy: 1e-6 + 1e-6 * abs(v * cdf))
            XCTAssertEqual(Double(gs[i]), cdf + v * pdf, accuracy: 1e-6 + 1e-6 * abs(cdf + v * pdf))
        }
        let s = noGrad { x.silu() }.toArray()
        for i in 0..<xs.count {
            let v = Double(xs[i]), ref = v / (1 + Foundation.exp(-v))
            XCTAssertEqual(Double(s[i]), ref, accuracy: 1e-6 + 1e-6 * abs(ref))
        }
    }

    func testGEGLUIsHiddenTimesGELUOfGate() {
        let x = Tensor.randn([5, 12], seed: 3)
        let halves = x.chunk(2, dim: -1)
        assertClose(x.geglu(), halves[0] * halves[1].gelu(), atol: 1e-6, "geglu vs its definition")
    }
}
