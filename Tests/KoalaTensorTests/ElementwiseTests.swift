import XCTest
import KoalaTestSupport
@testable import KoalaTensor

/// Forward output and input gradients of `op` against the torch fixture `prefix.*`.
func checkParity(_ prefix: String, inputs names: [String], atol: Float = 1e-5, rtol: Float = 1e-4,
                 file: StaticString = #filePath, line: UInt = #line, _ op: ([Tensor]) -> Tensor) throws {
    let f = try Fixtures.open("ops")
    let inputs = try names.map { try f.tensor("\(prefix).\($0)") }
    for t in inputs { t.requiresGrad = true }
    let out = op(inputs)
    assertClose(out, try f.tensor("\(prefix).out"), atol: atol, rtol: rtol, "\(prefix) forward", file: file, line: line)
    out.backward(try f.tensor("\(prefix).grad_out"))
    for (name, t) in zip(names, inputs) {
        guard let g = t.grad else { XCTFail("\(prefix): \(name) got no gradient", file: file, line: line); continue }
        assertClose(g, try f.tensor("\(prefix).grad_\(name)"), atol: atol, rtol: rtol, "\(prefix) grad \(name)", file: file, line: line)
    }
}

/// Values in [0.5, 2.5) (denominators, square roots).
func positive(_ shape: [Int], seed: UInt64) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    let t = Tensor.rand(shape, generator: &rng)
    for i in 0..<t.count { t.data[i] = t.data[i] * 2 + 0.5 }
    return t
}

final class ElementwiseTests: XCTestCase {
    func testBroadcastShapes() {
        XCTAssertEqual(Tensor.broadcastShape([2, 3, 4], [4]), [2, 3, 4])
        XCTAssertEqual(Tensor.broadcastShape([3, 1, 5], [4, 1]), [3, 4, 5])
        XCTAssertEqual(Tensor.broadcastShape([], [2, 2]), [2, 2])
        XCTAssertEqual(Tensor.broadcastShape([1, 3, 1, 1], [2, 3, 4, 5]), [2, 3, 4, 5])
    }

    func testPlansCollapseToTheFastLayouts() {
        func plan(_ a: [Int], _ b: [Int]) -> BroadcastPlan { BroadcastPlan(Tensor.zeros(a), Tensor.zeros(b)) }
        let same = plan([2, 3, 4], [2, 3, 4])
        XCTAssertEqual([same.dims, same.stridesA, same.stridesB], [[24], [1], [1]])
        let scalar = plan([2, 3, 4], [])
        XCTAssertEqual([scalar.dims, scalar.stridesA, scalar.stridesB], [[24], [1], [0]])
        let bias = plan([5, 6, 8], [8])
        XCTAssertEqual([bias.dims, bias.stridesA, bias.stridesB], [[30, 8], [8, 1], [0, 1]])
        let channel = plan([2, 3, 4, 5], [1, 3, 1, 1])
        XCTAssertEqual([channel.dims, channel.stridesA, channel.stridesB], [[2, 3, 20], [60, 20, 1], [0, 1, 0]])
        let perSample = plan([2, 3, 4, 5], [2, 3, 1, 1])
        XCTAssertEqual([perSample.dims, perSample.stridesA, perSample.stridesB], [[6, 20], [20, 1], [1, 0]])
    }

    func testBinaryOpsMatchTorch() throws {
        try checkParity("add_same", inputs: ["a", "b"]) { $0[0] + $0[1] }
        try checkParity("add_trailing", inputs: ["a", "b"]) { $0[0] + $0[1] }
        try checkParity("mul_channel", inputs: ["a", "b"]) { $0[0] * $0[1] }
        try checkParity("mul_channel_batch", inputs: ["a", "b"]) { $0[0] * $0[1] }
        try checkParity("sub_general", inputs: ["a", "b"]) { $0[0] - $0[1] }
        try checkParity("div_rows", inputs: ["a", "b"]) { $0[0] / $0[1] }
        try checkParity("div_general", inputs: ["a", "b"]) { $0[0] / $0[1] }
        try checkParity("mul_transposed", inputs: ["a", "b"]) { $0[0].transposed(0, 1) * $0[1] }
    }

    func testScalarAndUnaryOpsMatchTorch() throws {
        try checkParity("scalar_ops", inputs: ["x"]) { ($0[0] * 2.5 + 1) / 4 - 0.5 }
        try checkParity("rscalar_ops", inputs: ["x"]) { (3 - $0[0]) + 2 / $0[0] + 1.5 * $0[0] }
        try checkParity("neg", inputs: ["x"]) { -$0[0] }
        try checkParity("sqrt", inputs: ["x"]) { $0[0].sqrt() }
        try checkParity("square", inputs: ["x"]) { $0[0].square() }
        try checkParity("exp", inputs: ["x"]) { $0[0].exp() }
    }

    func testBinaryOpGradients() {
        gradCheck([Tensor.randn([3, 4], seed: 1), Tensor.randn([3, 4], seed: 2)]) { $0[0] + $0[1] }
        gradCheck([Tensor.randn([2, 3, 4], seed: 3), Tensor.randn([4], seed: 4)]) { $0[0] - $0[1] }
        gradCheck([Tensor.randn([2, 3, 2, 2], seed: 5), Tensor.randn([1, 3, 1, 1], seed: 6)]) { $0[0] * $0[1] }
        gradCheck([Tensor.randn([3, 1, 2], seed: 7), Tensor.randn([4, 1], seed: 8)]) { $0[0] * $0[1] }
        gradCheck([Tensor.randn([2, 3], seed: 9), positive([3], seed: 10)]) { $0[0] / $0[1] }
        gradCheck([Tensor.randn([4, 3], seed: 11), Tensor.randn([3, 4], seed: 12)]) { $0[0].transposed() * $0[1] }
    }

    func testUnaryOpGradients() {
        gradCheck([Tensor.randn([2, 5], seed: 1)]) { 3 - 2 * $0[0] / 4 + 1 }
        gradCheck([positive([2, 5], seed: 2)]) { 2 / $0[0] }
        gradCheck([Tensor.randn([2, 5], seed: 3)]) { -$0[0] }
        gradCheck([positive([2, 5], seed: 4)]) { $0[0].sqrt() }
        gradCheck([Tensor.randn([2, 5], seed: 5)]) { $0[0].square() }
        gradCheck([Tensor.randn([2, 5], seed: 6)]) { $0[0].exp() }
    }

    /// Large tensors take the parallel paths; each case against a plain loop over indices.
    func testLargeBroadcastsMatchNaiveLoops() {
        let n = 3, c = 64, hw = 1500
        let x = Tensor.randn([n, c, hw], seed: 1), s = Tensor.randn([1, c, 1], seed: 2)
        let bias = Tensor.randn([hw], seed: 3), y = Tensor.randn([n, c, hw], seed: 4)
        let scaled = (x * s).toArray(), biased = (x + bias).toArray(), diff = (x - y).toArray()
        let xs = x.toArray(), ss = s.toArray(), bs = bias.toArray(), ys = y.toArray()
        for i in 0..<n { for j in 0..<c { for k in 0..<hw {
            let o = (i * c + j) * hw + k
            if scaled[o] != xs[o] * ss[j] || biased[o] != xs[o] + bs[k] || diff[o] != xs[o] - ys[o] {
                XCTFail("mismatch at \(i), \(j), \(k)"); return
            }
        } } }
        // Strided operand (general path): x viewed as [hw, c, n].
        let xt = x.permute([2, 1, 0])
        let prod = (xt * xt).toArray()
        for k in 0..<hw { for j in 0..<c { for i in 0..<n {
            let v = xs[(i * c + j) * hw + k]
            if prod[(k * c + j) * n + i] != v * v { XCTFail("strided mismatch at \(k), \(j), \(i)"); return }
        } } }
    }

    func testAddInPlaceAccumulatesOutsideAutograd() {
        let acc = Tensor.randn([4, 3], seed: 1), b = Tensor.randn([4, 3], seed: 2), row = Tensor.randn([3], seed: 3)
        let a0 = acc.toArray(), bs = b.toArray(), rs = row.toArray()
        b.requiresGrad = true
        acc.addInPlace(b, alpha: 0.5)
        acc.addInPlace(row)
        XCTAssertNil(acc.gradFn)
        let got = acc.toArray()
        for i in 0..<12 { XCTAssertEqual(got[i], a0[i] + 0.5 * bs[i] + rs[i % 3], accuracy: 1e-6) }
    }
}
