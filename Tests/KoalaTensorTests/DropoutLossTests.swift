import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class DropoutLossTests: XCTestCase {
    func testDropoutIsIdentityInEvalOrAtZero() {
        let x = Tensor.randn([4, 5], seed: 1)
        var rng = RandomGenerator(seed: 3)
        let before = rng
        XCTAssertTrue(x.dropout(p: 0.5, training: false, generator: &rng) === x)
        XCTAssertTrue(x.dropout(p: 0, training: true, generator: &rng) === x)
        XCTAssertEqual(rng, before, "identity dropout draws no random numbers")
    }

    func testDropoutMaskStatisticsAndScaling() {
        let n = 200_000, p: Float = 0.3
        let x = Tensor.ones([n])
        var rng = RandomGenerator(seed: 5)
        let y = x.dropout(p: p, training: true, generator: &rng).toArray()
        let kept = y.filter { $0 != 0 }
        for v in kept { XCTAssertEqual(v, 1 / (1 - p), accuracy: 1e-6) }
        let keepRate = Double(kept.count) / Double(n)
        // Binomial standard deviation is ~0.001 here; 5 sigma.
        XCTAssertEqual(keepRate, 0.7, accuracy: 0.005)
        let mean = y.reduce(0.0) { $0 + Double($1) } / Double(n)
        XCTAssertEqual(mean, 1, accuracy: 0.01, "inverted dropout keeps the expectation")
        var rng2 = RandomGenerator(seed: 5)
        XCTAssertEqual(x.dropout(p: p, training: true, generator: &rng2).toArray(), y, "same generator state, same mask")
        var rng3 = RandomGenerator(seed: 5)
        XCTAssertEqual(Tensor.ones([4]).dropout(p: 1, training: true, generator: &rng3).toArray(), [0, 0, 0, 0])
    }

    func testDropoutBackwardUsesTheForwardMask() {
        let x = Tensor.randn([50, 40], seed: 2)
        x.requiresGrad = true
        var rng = RandomGenerator(seed: 7)
        let y = x.dropout(p: 0.4, training: true, generator: &rng)
        let g = Tensor.randn([50, 40], seed: 8)
        y.backward(g)
        let xs = x.toArray(), ys = y.toArray(), gs = g.toArray(), gx = x.grad!.toArray()
        for i in 0..<xs.count {
            // Output and gradient are both scaled by the same mask value m: y = m·x, gx = m·g.
            let m: Float = ys[i] == 0 ? 0 : 1 / 0.6
            XCTAssertEqual(ys[i], m * xs[i], accuracy: 1e-5)
            XCTAssertEqual(gx[i], m * gs[i], accuracy: 1e-5)
        }
        XCTAssertTrue(ys.contains(0) && ys.contains { $0 != 0 })
    }

    func testDropoutGradient() {
        gradCheck([Tensor.randn([3, 6], seed: 1)]) { x in
            var rng = RandomGenerator(seed: 4)  // fresh each call: the same mask every evaluation
            return x[0].dropout(p: 0.5, training: true, generator: &rng)
        }
    }

    func testMSELossMatchesTorch() throws {
        try checkParity("mse_mean", inputs: ["input", "target"]) { $0[0].mseLoss($0[1]) }
        try checkParity("mse_sum", inputs: ["input", "target"]) { $0[0].mseLoss($0[1], reduction: .sum) }
        try checkParity("mse_none", inputs: ["input", "target"]) { $0[0].mseLoss($0[1], reduction: .none) }
    }

    func testMSELossGradients() {
        let a = { Tensor.randn([2, 3, 4], seed: $0) }
        gradCheck([a(1), a(2)]) { $0[0].mseLoss($0[1]) }
        gradCheck([a(3), a(4)]) { $0[0].mseLoss($0[1], reduction: .sum) }
        gradCheck([a(5), a(6)]) { $0[0].mseLoss($0[1], reduction: .none) }
    }

    func testLargeMSEMatchesDoubleLoop() {
        let x = Tensor.randn([123_457], seed: 1), t = Tensor.randn([123_457], seed: 2)
        let xs = x.toArray(), ts = t.toArray()
        var s = 0.0
        for i in 0..<xs.count { let e = Double(xs[i]) - Double(ts[i]); s += e * e }
        XCTAssertEqual(Double(x.mseLoss(t).item), s / Double(xs.count), accuracy: 1e-6)
    }
}
