import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining
import XCTest

/// `MaskedLoss` against sd-scripts' `apply_masked_loss` as train_network.py applies it
/// (tools/reference/fixtures_maskedloss.py), and its gradient by finite differences.
final class MaskedLossTests: XCTestCase {
    func testMaskAndLossAndGradientMatchSdScripts() throws {
        let f = try Fixtures.open("maskedloss")
        for name in ["even", "uneven"] {
            let mask = try f.tensor("\(name).mask"), pred = try f.tensor("\(name).pred"), target = try f.tensor("\(name).target")
            let (H, W, h, w) = (mask.shape[1], mask.shape[2], pred.shape[2], pred.shape[3])
            let all = mask.toArray()
            let masks = Tensor.cat((0..<2).map { i in
                MaskedLoss.latentMask(Array(all[i * H * W..<(i + 1) * H * W]), height: H, width: W, latentHeight: h, latentWidth: w)
            }, dim: 0)
            assertClose(masks, try f.tensor("\(name).latentmask"), atol: 1e-6, rtol: 1e-6, "\(name) mask at latent size")
            pred.requiresGrad = true
            let loss = MaskedLoss.perExample(pred, target, masks: masks)
            assertClose(loss, try f.tensor("\(name).loss"), atol: 1e-6, rtol: 1e-5, "\(name) loss")
            loss.mean().backward()
            assertClose(try XCTUnwrap(pred.grad), try f.tensor("\(name).grad"), atol: 1e-7, rtol: 1e-5, "\(name) gradient")
        }
    }

    func testGradientMatchesFiniteDifferences() {
        let masks = Tensor(shape: [2, 1, 2, 3], values: [1, 0, 0.5, 1, 1, 0, 0.25, 0.75, 1, 0, 1, 1])
        let pred = Tensor.randn([2, 3, 2, 3], seed: 1), target = Tensor.randn([2, 3, 2, 3], seed: 2)
        gradCheck([pred]) { MaskedLoss.perExample($0[0], target, masks: masks).sum() }
    }

    func testAllOnesMaskIsThePlainLoss() {
        let pred = Tensor.randn([1, 4, 3, 3], seed: 3), target = Tensor.randn([1, 4, 3, 3], seed: 4)
        let ones = MaskedLoss.latentMask([Float](repeating: 1, count: 24 * 24), height: 24, width: 24, latentHeight: 3, latentWidth: 3)
        XCTAssertEqual(MaskedLoss.perExample(pred, target, masks: ones).toArray()[0], pred.mseLoss(target).toArray()[0], accuracy: 1e-6)
    }
}
