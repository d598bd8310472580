import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class ReductionTests: XCTestCase {
    func testReductionsMatchTorch() throws {
        try checkParity("sum_all", inputs: ["x"]) { $0[0].sum() }
        try checkParity("mean_all", inputs: ["x"]) { $0[0].mean() }
        try checkParity("sum_dim1", inputs: ["x"]) { $0[0].sum(dim: 1) }
        try checkParity("sum_dim0_keep", inputs: ["x"]) { $0[0].sum(dim: 0, keepDim: true) }
        try checkParity("mean_last_keep", inputs: ["x"]) { $0[0].mean(dim: -1, keepDim: true) }
        try checkParity("mean_dim2", inputs: ["x"]) { $0[0].mean(dim: 2) }
    }

    func testReductionGradients() {
        let x = { Tensor.randn([2, 3, 4], seed: $0) }
        gradCheck([x(1)]) { $0[0].sum() }
        gradCheck([x(2)]) { $0[0].mean() }
        gradCheck([x(3)]) { $0[0].sum(dim: 1) }
        gradCheck([x(4)]) { $0[0].mean(dim: -1, keepDim: true) }
        gradCheck([x(5)]) { $0[0].mean(dim: 0) }
        gradCheck([x(6)]) { $0[0].transposed(0, 2).sum(dim: 1) }
    }

    func testScalarResultsHaveEmptyShape() {
        XCTAssertEqual(Tensor.ones([3, 4]).sum().shape, [])
        XCTAssertEqual(Tensor.ones([3, 4]).mean().shape, [])
    }

    /// Large reductions (blocks in parallel, column splits) against Double loops.
    func testLargeReductionsMatchDoubleLoops() {
        let x = Tensor.randn([3, 200, 700], seed: 1)
        let xs = x.toArray().map(Double.init)
        var total = 0.0
        for v in xs { total += v }
        XCTAssertEqual(Double(x.sum().item), total, accuracy: 1e-3)
        XCTAssertEqual(Double(x.mean().item), total / Double(xs.count), accuracy: 1e-8)
        let byMid = x.sum(dim: 1).toArray(), byLast = x.mean(dim: 2).toArray(), byFirst = x.sum(dim: 0).toArray()
        for i in 0..<3 { for k in 0..<700 {
            var s = 0.0
            for j in 0..<200 { s += xs[(i * 200 + j) * 700 + k] }
            XCTAssertEqual(Double(byMid[i * 700 + k]), s, accuracy: 1e-3)
        } }
        for i in 0..<3 { for j in 0..<200 {
            var s = 0.0
            for k in 0..<700 { s += xs[(i * 200 + j) * 700 + k] }
            XCTAssertEqual(Double(byLast[i * 200 + j]), s / 700, accuracy: 1e-5)
        } }
        for j in 0..<200 { for k in 0..<700 {
            let s = xs[j * 700 + k] + xs[(200 + j) * 700 + k] + xs[(400 + j) * 700 + k]
            XCTAssertEqual(Double(byFirst[j * 700 + k]), s, accuracy: 1e-5)
        } }
    }

    func testFullSumDoesNotDependOnThreadCount() {
        let x = Tensor.randn([100_003], seed: 2)
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 1
        let one = x.sum().item
        Parallel.threads = 2
        XCTAssertEqual(x.sum().item, one)
    }
}
