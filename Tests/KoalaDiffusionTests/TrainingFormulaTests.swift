import XCTest
import KoalaTestSupport
import KoalaTensor
@testable import KoalaDiffusion

/// The loss weights, noise draw and guidance rescale of training and sampling against the
/// diffusers functions that define them (tools/reference/fixtures_trainingformulas.py).
final class TrainingFormulaTests: XCTestCase {
    func testMinSNRWeightsMatchDiffusersTrainingScript() throws {
        let f = try Fixtures.open("trainingformulas")
        let t = try f.tensor("timesteps").toArray().map { Int($0) }
        var zeroSNR = SchedulerConfig.sdxl
        zeroSNR.rescaleBetasZeroSNR = true
        let cases: [(String, SchedulerConfig, [PredictionType])] = [
            ("sdxl", .sdxl, [.epsilon, .vPrediction]), ("zsnr", zeroSNR, [.vPrediction]),
        ]
        for (name, config, predictions) in cases {
            let s = NoiseSchedule(config: config)
            for p in predictions {
                let w = s.minSNRWeights(timesteps: t, gamma: 5, predictionType: p)
                assertClose(Tensor(shape: [w.count], values: w), try f.tensor("\(name).minsnr.\(p.rawValue)"),
                            atol: 1e-7, rtol: 1e-5, "\(name) \(p.rawValue)")
            }
        }
        // The weights must differ between the two targets, or the test above could not tell them apart.
        let s = NoiseSchedule(config: .sdxl)
        XCTAssertNotEqual(s.minSNRWeights(timesteps: t, gamma: 5, predictionType: .epsilon),
                          s.minSNRWeights(timesteps: t, gamma: 5, predictionType: .vPrediction))
    }

    func testNoiseOffsetDrawMatchesDiffusersTrainingScript() throws {
        let f = try Fixtures.open("trainingformulas")
        var g = TorchGenerator(seed: 1234)
        let (noise, t) = NoiseSchedule(config: .sdxl).trainingNoise(shape: [2, 4, 3, 5], offset: 0.05, from: &g)
        assertClose(noise, try f.tensor("offset.noise"), atol: 1e-6, rtol: 1e-6, "offset noise")
        XCTAssertEqual(t, try f.tensor("offset.timesteps").toArray().map { Int($0) })
    }

    func testGuidanceRescaleMatchesDiffusersRescaleNoiseCFG() throws {
        let f = try Fixtures.open("trainingformulas")
        let cfg = try f.tensor("rescale.cfg"), text = try f.tensor("rescale.text")
        for (r, name): (Float, String) in [(0, "rescale.0.0"), (0.3, "rescale.0.3"), (0.7, "rescale.0.7"), (1, "rescale.1.0")] {
            assertClose(rescaleNoiseCFG(cfg, text: text, rescale: r), try f.tensor(name), atol: 1e-6, rtol: 1e-5, name)
        }
    }
}
