import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class LinearTests: XCTestCase {
    func testMatmulMatchesTorch() throws {
        let f = try Fixtures.open("linear")
        let a = try f.tensor("matmul.a"), b = try f.tensor("matmul.b")
        a.requiresGrad = true; b.requiresGrad = true
        let out = a.matmul(b)
        assertClose(out, try f.tensor("matmul.out"), "forward")
        out.backward(try f.tensor("matmul.grad_out"))
        assertClose(a.grad!, try f.tensor("matmul.grad_a"), "grad a")
        assertClose(b.grad!, try f.tensor("matmul.grad_b"), "grad b")
    }

    func testBatchedMatmulWithTransposedOperandMatchesTorch() throws {
        let f = try Fixtures.open("linear")
        let a = try f.tensor("bmm.a"), b = try f.tensor("bmm.b")  // b is [B, N, K]; used transposed
        a.requiresGrad = true; b.requiresGrad = true
        let out = a.matmul(b.transposed())
        assertClose(out, try f.tensor("bmm.out"), "forward")
        out.backward(try f.tensor("bmm.grad_out"))
        assertClose(a.grad!, try f.tensor("bmm.grad_a"), "grad a")
        assertClose(b.grad!, try f.tensor("bmm.grad_b"), "grad b")
    }

    func testLinearMatchesTorch() throws {
        let f = try Fixtures.open("linear")
        let x = try f.tensor("linear.x"), w = try f.tensor("linear.weight"), b = try f.tensor("linear.bias")
        for t in [x, w, b] { t.requiresGrad = true }
        let out = x.linear(w, b)
        assertClose(out, try f.tensor("linear.out"), "forward")
        out.backward(try f.tensor("linear.grad_out"))
        assertClose(x.grad!, try f.tensor("linear.grad_x"), "grad x")
        assertClose(w.grad!, try f.tensor("linear.grad_weight"), "grad weight")
        assertClose(b.grad!, try f.tensor("linear.grad_bias"), "grad bias")
    }

    func testMatmulGradients() {
        gradCheck([Tensor.randn([2, 3, 4], seed: 1), Tensor.randn([4, 5], seed: 2)]) { $0[0].matmul($0[1]) }
        gradCheck([Tensor.randn([2, 3, 4], seed: 3), Tensor.randn([2, 5, 4], seed: 4)]) { $0[0].matmul($0[1].transposed()) }
    }

    func testLinearGradients() {
        gradCheck([Tensor.randn([2, 3, 4], seed: 1), Tensor.randn([5, 4], seed: 2), Tensor.randn([5], seed: 3)]) {
            $0[0].linear($0[1], $0[2])
        }
    }

    func testFrozenWeightGetsNoGradient() {
        let x = Tensor.randn([3, 4], seed: 1), w = Tensor.randn([2, 4], seed: 2)
        x.requiresGrad = true
        x.linear(w).backward()
        XCTAssertNotNil(x.grad)
        XCTAssertNil(w.grad)
    }
}
