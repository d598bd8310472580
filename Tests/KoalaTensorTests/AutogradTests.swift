import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class AutogradTests: XCTestCase {
    func testGradientsAccumulateAcrossBackwardCalls() {
        let x = Tensor.randn([2, 3], seed: 1), w = Tensor.randn([4, 3], seed: 2)
        w.requiresGrad = true
        x.linear(w).backward()
        let once = w.grad!.toArray()
        x.linear(w).backward()
        XCTAssertEqual(w.grad!.toArray(), once.map { $0 * 2 })
    }

    /// Leaves adopt a backward's own gradient buffers without copying (isFresh); a buffer
    /// handed to two inputs, the incoming gradient passed through, or a view must still
    /// be copied, or the in-place accumulation of the next backward would write into
    /// another leaf's gradient.
    func testLeafGradientsNeverShareBuffers() {
        let x = Tensor.randn([3, 4], seed: 1), y = Tensor.randn([3, 4], seed: 2), w = Tensor.randn([5, 4], seed: 3)
        for t in [x, y, w] { t.requiresGrad = true }
        let seed = Tensor.randn([3, 4], seed: 4)
        for _ in 0..<2 {
            (x + y).backward(seed)  // add hands the incoming gradient to both inputs
            (x.reshape([12]) * 2).backward(Tensor.ones([12]))  // a view of a gradient reaches x
            x.linear(w).backward(Tensor.ones([3, 5]))  // fresh buffers for x and w
        }
        let grads = [x.grad!, y.grad!, w.grad!]
        for (i, a) in grads.enumerated() {
            XCTAssertFalse(a.storage === seed.storage)
            for b in grads[(i + 1)...] { XCTAssertFalse(a.storage === b.storage) }
        }
        let wSum = noGrad { w.detached().sum(dim: 0).toArray() }  // d/dx of sum(x·wᵀ), per column
        let sv = seed.toArray(), gx = x.grad!.toArray(), gy = y.grad!.toArray()
        for i in 0..<12 {
            XCTAssertEqual(gy[i], 2 * sv[i], accuracy: 1e-5)
            XCTAssertEqual(gx[i], 2 * (sv[i] + 2 + wSum[i % 4]), accuracy: 1e-4)
        }
        let colSums = noGrad { x.detached().sum(dim: 0).toArray() }
        for (i, v) in w.grad!.toArray().enumerated() { XCTAssertEqual(v, 2 * colSums[i % 4], accuracy: 1e-4) }
    }

    func testIntermediateUsedTwiceSumsItsGradients() {
        // h receives two gradients of its own (one per linear); the second is added into the first.
        let x = Tensor.randn([3, 4], seed: 1), w1 = Tensor.randn([4, 4], seed: 2)
        let w2 = Tensor.randn([2, 4], seed: 3), w3 = Tensor.randn([2, 4], seed: 4)
        w1.requiresGrad = true
        let h = x.linear(w1)
        (h.linear(w2) + h.linear(w3)).backward(Tensor.ones([3, 2]))
        let expected = noGrad { Tensor.ones([3, 2]).matmul(w2 + w3).transposed().matmul(x) }
        assertClose(w1.grad!, expected, "dL/dw1 = (1·(w2 + w3))ᵀ x")
    }

    func testTensorUsedTwiceSumsItsGradients() {
        let a = Tensor.randn([3, 3], seed: 1)
        a.requiresGrad = true
        a.matmul(a).backward()
        // d/dA sum(A·A) = 1·Aᵀ + Aᵀ·1
        let ones = Tensor.ones([3, 3])
        let expected = noGrad { ones.matmul(a.detached().transposed()).toArray() }
        let expected2 = noGrad { a.detached().transposed().matmul(ones).toArray() }
        let got = a.grad!.toArray()
        for i in 0..<9 { XCTAssertEqual(got[i], expected[i] + expected2[i], accuracy: 1e-5) }
    }

    func testNoGradRecordsNothing() {
        let w = Tensor.randn([2, 2], seed: 1)
        w.requiresGrad = true
        let y = noGrad { w.matmul(w) }
        XCTAssertFalse(y.requiresGrad)
        XCTAssertNil(y.gradFn)
    }

    func testCheckpointGivesSameGradientsAsPlainBackward() {
        let x = Tensor.randn([4, 8], seed: 1)
        let w1 = Tensor.randn([8, 8], seed: 2), w2 = Tensor.randn([8, 8], seed: 3)
        for t in [x, w1, w2] { t.requiresGrad = true }
        let block: ([Tensor]) -> Tensor = { $0[0].linear(w1).linear(w2) }
        block([x]).backward()
        let plain = [x, w1, w2].map { $0.grad!.toArray() }
        for t in [x, w1, w2] { t.grad = nil }
        let out = checkpoint([x], block)
        XCTAssertEqual(out.gradFn?.name, "checkpoint")
        out.backward()
        XCTAssertEqual([x, w1, w2].map { $0.grad!.toArray() }, plain)
    }

    func testBackwardReleasesSavedActivations() {
        weak var saved: Storage?
        let w = Tensor.randn([4, 4], seed: 1)
        w.requiresGrad = true
        var loss: Tensor? = nil
        do {
            let hidden = w.matmul(w)
            saved = hidden.storage
            loss = hidden.matmul(w)
        }
        XCTAssertNotNil(saved, "the graph keeps the intermediate alive before backward")
        loss!.backward()
        XCTAssertNil(saved, "backward frees the intermediate once its node has run")
    }
}
