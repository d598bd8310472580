import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class NormalizationTests: XCTestCase {
    /// name -> (groups, eps, affine), as in tools/reference/fixtures_convnorm.py.
    static let groupCases: [(String, Int, Float, Bool)] = [
        ("g4", 4, 1e-5, true), ("g2_3d", 2, 1e-6, true), ("g8_plain", 8, 1e-5, false), ("g4_offset", 4, 1e-6, true),
    ]

    func checkGroupNorm(fused: Bool) throws {
        let f = try Fixtures.open("convnorm")
        for (name, groups, eps, affine) in Self.groupCases {
            let p = "\(fused ? "gnsilu" : "gn").\(name)"
            let x = try f.tensor("\(p).x")
            let w = affine ? try f.tensor("\(p).weight") : nil, b = affine ? try f.tensor("\(p).bias") : nil
            for t in [x] + [w, b].compactMap({ $0 }) { t.requiresGrad = true }
            let out = fused ? x.groupNormSiLU(groups: groups, weight: w, bias: b, eps: eps)
                            : x.groupNorm(groups: groups, weight: w, bias: b, eps: eps)
            // The offset case normalises values near 20, where float32 rounding of x
            // itself is about 1e-6 relative to the spread torch computes from.
            let tol: Float = name.hasSuffix("offset") ? 1e-4 : 1e-5
            assertClose(out, try f.tensor("\(p).out"), atol: tol, "\(p) forward")
            out.backward(try f.tensor("\(p).grad_out"))
            assertClose(x.grad!, try f.tensor("\(p).grad_x"), atol: 10 * tol, rtol: 1e-3, "\(p) grad x")
            if let w { assertClose(w.grad!, try f.tensor("\(p).grad_weight"), atol: 10 * tol, "\(p) grad weight") }
            if let b { assertClose(b.grad!, try f.tensor("\(p).grad_bias"), atol: 10 * tol, "\(p) grad bias") }
        }
    }

    func testGroupNormMatchesTorch() throws { try checkGroupNorm(fused: false) }

    func testGroupNormSiLUMatchesTorch() throws { try checkGroupNorm(fused: true) }

    func testLayerNormMatchesTorch() throws {
        let f = try Fixtures.open("convnorm")
        let x = try f.tensor("ln.affine.x"), w = try f.tensor("ln.affine.weight"), b = try f.tensor("ln.affine.bias")
        for t in [x, w, b] { t.requiresGrad = true }
        let out = x.layerNorm(weight: w, bias: b, eps: 1e-5)
        assertClose(out, try f.tensor("ln.affine.out"), "forward")
        out.backward(try f.tensor("ln.affine.grad_out"))
        assertClose(x.grad!, try f.tensor("ln.affine.grad_x"), rtol: 1e-3, "grad x")
        assertClose(w.grad!, try f.tensor("ln.affine.grad_weight"), "grad weight")
        assertClose(b.grad!, try f.tensor("ln.affine.grad_bias"), "grad bias")

        let x2 = try f.tensor("ln.plain.x")
        x2.requiresGrad = true
        let out2 = x2.layerNorm(weight: nil, bias: nil, eps: 1e-6)
        assertClose(out2, try f.tensor("ln.plain.out"), "plain forward")
        out2.backward(try f.tensor("ln.plain.grad_out"))
        assertClose(x2.grad!, try f.tensor("ln.plain.grad_x"), rtol: 1e-3, "plain grad x")
    }

    func testGroupNormGradients() {
        gradCheck([Tensor.randn([2, 6, 3, 4], seed: 1), Tensor.randn([6], seed: 2), Tensor.randn([6], seed: 3)]) {
            $0[0].groupNorm(groups: 3, weight: $0[1], bias: $0[2], eps: 1e-5)
        }
        gradCheck([Tensor.randn([2, 4, 5], seed: 4)]) { $0[0].groupNorm(groups: 2, weight: nil, bias: nil, eps: 1e-6) }
    }

    func testGroupNormSiLUGradients() {
        gradCheck([Tensor.randn([2, 6, 3, 4], seed: 5), Tensor.randn([6], seed: 6), Tensor.randn([6], seed: 7)]) {
            $0[0].groupNormSiLU(groups: 3, weight: $0[1], bias: $0[2], eps: 1e-5)
        }
        gradCheck([Tensor.randn([2, 4, 5], seed: 8)]) { $0[0].groupNormSiLU(groups: 4, weight: nil, bias: nil, eps: 1e-6) }
    }

    func testLayerNormGradients() {
        gradCheck([Tensor.randn([3, 4, 7], seed: 1), Tensor.randn([7], seed: 2), Tensor.randn([7], seed: 3)]) {
            $0[0].layerNorm(weight: $0[1], bias: $0[2], eps: 1e-5)
        }
        // More rows than one partial-sum block (64 rows) for the weight gradient.
        gradCheck([Tensor.randn([150, 5], seed: 4), Tensor.randn([5], seed: 5), Tensor.randn([5], seed: 6)]) {
            $0[0].layerNorm(weight: $0[1], bias: $0[2], eps: 1e-5)
        }
        gradCheck([Tensor.randn([4, 6], seed: 7)]) { $0[0].layerNorm(weight: nil, bias: nil, eps: 1e-6) }
    }

    func testFusedGroupNormSiLUEqualsSiLUOfGroupNorm() {
        // Large planes cross the 4096-value block boundary of the SiLU pass.
        let x = Tensor.randn([1, 4, 70, 70], seed: 9), w = Tensor.randn([4], seed: 10), b = Tensor.randn([4], seed: 11)
        let fused = x.groupNormSiLU(groups: 2, weight: w, bias: b, eps: 1e-5).toArray()
        let plain = x.groupNorm(groups: 2, weight: w, bias: b, eps: 1e-5).toArray()
        for i in stride(from: 0, to: plain.count, by: 97) {
            let z = plain[i], expected = z / (1 + exp(-z))
            XCTAssertEqual(fused[i], expected, accuracy: 1e-5)
        }
    }

    func testFrozenAffineGetsNoGradient() {
        let x = Tensor.randn([2, 4, 3, 3], seed: 1), w = Tensor.randn([4], seed: 2), b = Tensor.randn([4], seed: 3)
        x.requiresGrad = true
        x.groupNormSiLU(groups: 2, weight: w, bias: b, eps: 1e-5).backward()
        XCTAssertNotNil(x.grad)
        XCTAssertNil(w.grad)
        XCTAssertNil(b.grad)
    }
}
