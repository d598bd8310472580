import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class SoftmaxTests: XCTestCase {
    private func checkAgainstTorch(_ name: String, dim: Int) throws {
        let f = try Fixtures.open("attention")
        let x = try f.tensor("\(name).x")
        x.requiresGrad = true
        let out = x.softmax(dim: dim)
        assertClose(out, try f.tensor("\(name).out"), atol: 1e-6, "\(name) forward")
        out.backward(try f.tensor("\(name).grad_out"))
        assertClose(x.grad!, try f.tensor("\(name).grad_x"), atol: 1e-6, "\(name) grad x")
    }

    func testLastDimMatchesTorch() throws { try checkAgainstTorch("softmax_last", dim: -1) }

    func testMiddleDimMatchesTorch() throws { try checkAgainstTorch("softmax_mid", dim: 1) }

    func testLargeLogitsStayFinite() throws { try checkAgainstTorch("softmax_large", dim: -1) }

    func testNonContiguousInput() throws {
        // Softmax over dim 1 of x equals softmax over the last dim of a transposed view.
        let f = try Fixtures.open("attention")
        let x = try f.tensor("softmax_mid.x")
        x.requiresGrad = true
        let out = x.transposed(1, 2).softmax(dim: -1).transposed(1, 2)
        assertClose(out, try f.tensor("softmax_mid.out"), atol: 1e-6, "forward")
        out.backward(try f.tensor("softmax_mid.grad_out"))
        assertClose(x.grad!, try f.tensor("softmax_mid.grad_x"), atol: 1e-6, "grad x")
    }

    func testOutputIsFreedWithoutBackward() {
        weak var weakOut: Tensor?
        do {
            let x = Tensor.randn([3, 4], seed: 1)
            x.requiresGrad = true
            let out = x.softmax()
            XCTAssertNotNil(out.gradFn)
            weakOut = out
        }
        XCTAssertNil(weakOut)
    }

    func testGradients() {
        gradCheck([Tensor.randn([3, 21], seed: 1)]) { $0[0].softmax(dim: -1) }
        gradCheck([Tensor.randn([2, 4, 3], seed: 2)]) { $0[0].softmax(dim: 1) }
        gradCheck([Tensor.randn([4, 2, 3], seed: 3)]) { $0[0].softmax(dim: 0) }
    }
}
