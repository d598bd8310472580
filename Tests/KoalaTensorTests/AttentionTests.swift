import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class AttentionTests: XCTestCase {
    /// Runs `body` with other tile sizes (queries × keys), to exercise several tiles and
    /// ragged last tiles on small shapes.
    private func withBlock<T>(_ block: Int?, keyBlock: Int? = nil, _ body: () throws -> T) rethrows -> T {
        let saved = (Tensor.attentionBlock, Tensor.attentionKeyBlock)
        if let block { Tensor.attentionBlock = block }
        if let keyBlock { Tensor.attentionKeyBlock = keyBlock }
        defer { (Tensor.attentionBlock, Tensor.attentionKeyBlock) = saved }
        return try body()
    }

    private func withThreads(_ n: Int, _ body: () throws -> Void) rethrows {
        let saved = Parallel.threads
        Parallel.threads = n
        defer { Parallel.threads = saved }
        try body()
    }

    /// Forward and q/k/v gradients against the torch fixture `name`. With `permuted`,
    /// the inputs are per-head views of [B, L, H, D] buffers, as attention gets them
    /// from projections.
    private func check(_ name: String, causal: Bool = false, scale: Float? = nil, block: Int? = nil,
                       keyBlock: Int? = nil, permuted: Bool = false, needs: [Bool] = [true, true, true],
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let f = try Fixtures.open("attention")
        let leaves = try ["q", "k", "v"].map { n -> Tensor in
            let t = try f.tensor("\(name).\(n)")
            return permuted ? t.permute([0, 2, 1, 3]).copy() : t
        }
        for (t, need) in zip(leaves, needs) { t.requiresGrad = need }
        let inputs = permuted ? leaves.map { $0.permute([0, 2, 1, 3]) } : leaves
        if permuted { XCTAssertFalse(inputs[0].isContiguous) }
        try withBlock(block, keyBlock: keyBlock) {
            let out = Tensor.scaledDotProductAttention(query: inputs[0], key: inputs[1], value: inputs[2],
                                                       causal: causal, scale: scale)
            assertClose(out, try f.tensor("\(name).out"), "\(name) forward", file: file, line: line)
            out.backward(try f.tensor("\(name).grad_out"))
        }
        for (i, n) in ["q", "k", "v"].enumerated() {
            guard needs[i] else { XCTAssertNil(leaves[i].grad, file: file, line: line); continue }
            guard let g = leaves[i].grad else { XCTFail("\(name): no grad for \(n)", file: file, line: line); continue }
            assertClose(permuted ? g.permute([0, 2, 1, 3]) : g, try f.tensor("\(name).grad_\(n)"),
                        "\(name) grad \(n)", file: file, line: line)
        }
    }

    func testSelfAttentionMatchesTorch() throws { try check("self") }

    func testCrossAttentionWithScaleMatchesTorch() throws { try check("cross_scale", scale: 0.3) }

    func testCausalMatchesTorch() throws {
        try check("causal", causal: true)
        try check("causal_short", causal: true)  // L < S
        try check("causal_long", causal: true)   // L > S: late queries see every key
    }

    func testSeveralTilesMatchTorch() throws {
        for (block, keyBlock) in [(16, 8), (7, 5), (64, 512), (40, 1), (5, 27)] {
            try check("tiled", block: block, keyBlock: keyBlock)
            try check("tiled_causal", causal: true, block: block, keyBlock: keyBlock)
            try check("causal_short", causal: true, block: max(1, block / 4), keyBlock: keyBlock)
            try check("causal_long", causal: true, block: max(1, block / 4), keyBlock: keyBlock)
        }
    }

    func testPermutedViewsMatchTorch() throws {
        try check("self", permuted: true)
        try check("cross_scale", scale: 0.3, permuted: true)
        try check("tiled_causal", causal: true, block: 16, keyBlock: 8, permuted: true)
    }

    func testPartialGradients() throws {
        try check("cross_scale", scale: 0.3, needs: [true, false, false])
        try check("tiled", block: 16, keyBlock: 8, needs: [false, true, false])
        try check("tiled_causal", causal: true, block: 16, keyBlock: 8, needs: [false, false, true])
    }

    /// Head counts that do not divide among workers split each head's queries and sum
    /// partial dK/dV buffers afterwards.
    func testUnevenHeadSplitMatchesTorch() throws {
        for threads in [4, 5] {
            try withThreads(threads) {
                try check("self")
                try check("tiled", block: 16, keyBlock: 8)
                try check("tiled_causal", causal: true, block: 7, keyBlock: 16)
            }
        }
    }

    func testOutputIsHeadInterleaved() {
        let q = Tensor.randn([2, 3, 5, 4], seed: 1)
        let out = Tensor.scaledDotProductAttention(query: q, key: q, value: q)
        XCTAssertTrue(out.permute([0, 2, 1, 3]).isContiguous)
    }

    /// The backward closure must not own the output: an unused graph is freed with it.
    func testOutputIsFreedWithoutBackward() {
        weak var weakOut: Tensor?
        do {
            let q = Tensor.randn([1, 2, 5, 4], seed: 1)
            q.requiresGrad = true
            let out = Tensor.scaledDotProductAttention(query: q, key: q, value: q)
            XCTAssertNotNil(out.gradFn)
            weakOut = out
        }
        XCTAssertNil(weakOut)
    }

    func testGradients() {
        let shapes = [[1, 2, 5, 4], [1, 2, 6, 4], [1, 2, 6, 3]]
        for causal in [false, true] {
            withBlock(2, keyBlock: 4) {
                gradCheck(shapes.enumerated().map { Tensor.randn($0.element, seed: UInt64(10 + $0.offset)) }) {
                    Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], causal: causal)
                }
            }
        }
    }

    /// The tiled kernel against attention written with matmul and softmax, for sizes
    /// spanning several tiles and ragged last tiles. Keys grow along the sequence so that
    /// later key tiles raise rows' running max well past the slack (rescaled outputs).
    func testTiledEqualsNaive() {
        let (b, h, l, s, d) = (1, 2, 300, 200, 16)
        for causal in [false, true] {
            let k = Tensor.randn([b, h, s, d], seed: 2)
            for bh in 0..<(b * h) { for j in 0..<s { for c in 0..<d { k.data[(bh * s + j) * d + c] *= 1 + 8 * Float(j) / Float(s) } } }
            let q = Tensor.randn([b, h, l, d], seed: 1)
            let v = Tensor.randn([b, h, s, d], seed: 3), g = Tensor.randn([b, h, l, d], seed: 4)
            let scale: Float = 0.3
            for t in [q, k, v] { t.requiresGrad = true }

            // Naive reference; `scale` folded into a scaled copy of q.
            let qs = Tensor(shape: q.shape, values: q.toArray().map { $0 * scale }, requiresGrad: true)
            let scores = qs.matmul(k.transposed())
            if causal {
                // Masking the matmul output in place is safe here: matmul's backward does not
                // read its output, and softmax sends zero gradient to the masked entries.
                let p = scores.data
                for bh in 0..<(b * h) { for i in 0..<l { for j in (i + 1)..<max(s, i + 1) { p[(bh * l + i) * s + j] = -.infinity } } }
            }
            let naive = scores.softmax(dim: -1).matmul(v)
            naive.backward(g)
            let naiveGrads = [Tensor(shape: q.shape, values: qs.grad!.toArray().map { $0 * scale }), k.grad!, v.grad!]
            k.grad = nil; v.grad = nil

            let out = withBlock(64, keyBlock: 48) {
                Tensor.scaledDotProductAttention(query: q, key: k, value: v, causal: causal, scale: scale)
            }
            assertClose(out, naive, "forward causal=\(causal)")
            out.backward(g)
            for (i, t) in [q, k, v].enumerated() {
                assertClose(t.grad!, naiveGrads[i], atol: 1e-4, "grad \(i) causal=\(causal)")
            }
        }
    }
}
