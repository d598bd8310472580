import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class ShapeOpsTests: XCTestCase {
    func testCatMatchesTorch() throws {
        try checkParity("cat_dim1", inputs: ["a", "b", "c"]) { Tensor.cat($0, dim: 1) }
        try checkParity("cat_dim0", inputs: ["a", "b"]) { Tensor.cat($0, dim: 0) }
        try checkParity("cat_last", inputs: ["a", "b"]) { Tensor.cat($0, dim: -1) }
    }

    /// Pieces against torch, then backward of Σ <piece_i, grad_out_i>.
    private func checkPieces(_ prefix: String, _ op: (Tensor) -> [Tensor]) throws {
        let f = try Fixtures.open("ops")
        let x = try f.tensor("\(prefix).x")
        x.requiresGrad = true
        let pieces = op(x)
        var loss: Tensor? = nil
        for (i, p) in pieces.enumerated() {
            assertClose(p, try f.tensor("\(prefix).out\(i)"), "\(prefix) piece \(i)")
            let term = (p * (try f.tensor("\(prefix).grad_out\(i)"))).sum()
            loss = loss.map { $0 + term } ?? term
        }
        XCTAssertFalse(f.names.contains("\(prefix).out\(pieces.count)"), "\(prefix): torch made more pieces")
        loss!.backward()
        assertClose(x.grad!, try f.tensor("\(prefix).grad_x"), "\(prefix) grad")
    }

    func testSplitAndChunkMatchTorch() throws {
        try checkPieces("split") { $0.split([1, 3, 2], dim: 1) }
        try checkPieces("chunk") { $0.chunk(3, dim: 1) }
        try checkPieces("chunk_last") { $0.chunk(2, dim: -1) }
    }

    func testShapeOpGradients() {
        gradCheck([Tensor.randn([2, 1, 3], seed: 1), Tensor.randn([2, 2, 3], seed: 2)]) { Tensor.cat($0, dim: 1) }
        gradCheck([Tensor.randn([2, 3], seed: 3), Tensor.randn([2, 1], seed: 4)]) { Tensor.cat($0, dim: -1) }
        gradCheck([Tensor.randn([2, 5, 3], seed: 5)]) { x in
            let p = x[0].split([2, 3], dim: 1)
            return p[0].sum(dim: 1) * p[1].sum(dim: 1)
        }
        gradCheck([Tensor.randn([4, 6], seed: 6)]) { x in
            let p = x[0].chunk(3, dim: -1)
            return p[0] * p[1] + p[2]
        }
    }

    func testChunkSizesFollowTorch() {
        XCTAssertEqual(Tensor.zeros([7]).chunk(3, dim: 0).map { $0.shape[0] }, [3, 3, 1])
        XCTAssertEqual(Tensor.zeros([6]).chunk(4, dim: 0).map { $0.shape[0] }, [2, 2, 2])
        XCTAssertEqual(Tensor.zeros([2]).chunk(5, dim: 0).map { $0.shape[0] }, [1, 1])
    }

    func testLargeCatRoundTripsThroughSplit() {
        let a = Tensor.randn([4, 300, 100], seed: 1), b = Tensor.randn([4, 500, 100], seed: 2)
        let c = Tensor.cat([a, b], dim: 1)
        let parts = c.split([300, 500], dim: 1)
        XCTAssertEqual(parts[0].toArray(), a.toArray())
        XCTAssertEqual(parts[1].toArray(), b.toArray())
    }
}
