import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining
import XCTest

/// The prior-preservation loss against diffusers' formula (tools/reference/fixtures_priorloss.py):
/// the U-Net batch is [instance rows; class rows], loss = instance MSE + λ × class MSE.
final class PriorLossTests: XCTestCase {
    func perExample(_ pred: Tensor, _ target: Tensor) -> Tensor {
        pred.mseLoss(target, reduction: .none).reshape([pred.shape[0], -1]).mean(dim: 1)
    }

    func testLossAndGradientMatchDiffusers() throws {
        let f = try Fixtures.open("priorloss")
        let weights = try f.tensor("weights").toArray()
        for (name, w) in [("plain", nil), ("weighted", weights)] as [(String, [Float]?)] {
            let pred = try f.tensor("pred"), target = try f.tensor("target")
            pred.requiresGrad = true
            let loss = PriorPreservation.loss(perExample: perExample(pred, target), weights: w, instanceCount: 2, priorWeight: 0.7)
            assertClose(loss.reshape([1]), try f.tensor("\(name).loss"), name)
            loss.backward()
            assertClose(pred.grad!, try f.tensor("\(name).grad_pred"), "\(name) grad")
        }
    }

    func testWeightZeroIsTheInstanceLoss() throws {
        let f = try Fixtures.open("priorloss")
        let weights = try f.tensor("weights").toArray()
        for (name, w) in [("plain", nil), ("weighted", weights)] as [(String, [Float]?)] {
            let loss = PriorPreservation.loss(perExample: perExample(try f.tensor("pred"), try f.tensor("target")), weights: w,
                                              instanceCount: 2, priorWeight: 0)
            assertClose(loss.reshape([1]), try f.tensor("\(name).instance_only"), name)
        }
    }

    func testWithoutClassRowsItIsThePlainMean() throws {
        let f = try Fixtures.open("priorloss")
        let pred = try f.tensor("pred"), target = try f.tensor("target")
        let loss = PriorPreservation.loss(perExample: perExample(pred, target), weights: nil, instanceCount: 4, priorWeight: 0.7)
        assertClose(loss, pred.mseLoss(target), "all rows are instance rows: λ plays no part")
    }
}
