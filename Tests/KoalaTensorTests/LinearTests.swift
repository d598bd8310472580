import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class LinearTests: XCTestCase {
    /// `op(a, b)` and the gradients of a and b against the fixture entries `<name>.*`.
    func assertMatchesTorch(_ name: String, file: StaticString = #filePath, line: UInt = #line,
                            _ op: (Tensor, Tensor) -> Tensor) throws {
        let f = try Fixtures.open("linear")
        let a = try f.tensor("\(name).a"), b = try f.tensor("\(name).b")
        a.requiresGrad = true; b.requiresGrad = true
        let out = op(a, b)
        assertClose(out, try f.tensor("\(name).out"), "forward", file: file, line: line)
        out.backward(try f.tensor("\(name).grad_out"))
        assertClose(a.grad!, try f.tensor("\(name).grad_a"), "grad a", file: file, line: line)
        assertClose(b.grad!, try f.tensor("\(name).grad_b"), "grad b", file: file, line: line)
    }

    func testMatmulMatchesTorch() throws {
        try assertMatchesTorch("matmul") { $0.matmul($1) }
    }

    func testBatchedMatmulWithTransposedOperandMatchesTorch() throws {
        try assertMatchesTorch("bmm") { $0.matmul($1.transposed()) }  // b is [B, N, K]; used transposed
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

    /// GEMMs above `BLAS.splitThreshold` run as row or column blocks on several threads;
    /// every layout must give what one sgemm call gives (here against a Double sum).
    func testSplitGEMMMatchesDirectSum() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 3
        // m < n splits columns, m > n rows; odd extents leave partial 32-wide blocks.
        for (m, n, k) in [(45, 1003, 97), (1003, 45, 97)] {
            XCTAssertGreaterThanOrEqual(m * n * k, BLAS.splitThreshold)
            for transA in [false, true] {
                for transB in [false, true] {
                    let a = Tensor.randn(transA ? [k, m] : [m, k], seed: 1), b = Tensor.randn(transB ? [n, k] : [k, n], seed: 2)
                    let ldc = n + 3  // C is a submatrix of a wider buffer
                    let c = Tensor.randn([m, ldc], seed: 3), before = c.contiguous().toArray()
                    BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a.data, lda: transA ? m : k,
                               b: b.data, ldb: transB ? k : n, beta: 2, c: c.data, ldc: ldc)
                    let av = a.toArray(), bv = b.toArray(), cv = c.toArray()
                    var worst = 0.0
                    for i in 0..<m {
                        for j in 0..<ldc {
                            var expected = Double(before[i * ldc + j])
                            if j < n {
                                var sum = 0.0
                                for p in 0..<k {
                                    sum += Double(av[transA ? p * m + i : i * k + p]) * Double(bv[transB ? j * k + p : p * n + j])
                                }
                                expected = 0.5 * sum + 2 * expected
                            }
                            worst = max(worst, abs(Double(cv[i * ldc + j]) - expected))
                        }
                    }
                    XCTAssertLessThan(worst, 1e-3, "m \(m) n \(n) k \(k) transA \(transA) transB \(transB)")
                }
            }
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
