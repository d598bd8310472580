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
