import KoalaTensor
import KoalaTestSupport
@testable import KoalaDiffusion
import XCTest

/// sd-scripts' `debiased_estimation` weights and `min_timestep`/`max_timestep` draw
/// (tools/reference/fixtures_timestepweights.py restates its formulas on diffusers' DDPMScheduler).
final class TimestepWeightingTests: XCTestCase {
    func testDebiasedEstimationWeightsMatchSdScripts() throws {
        let f = try Fixtures.open("timestepweights")
        let t = try f.tensor("timesteps").toArray().map { Int($0) }
        let s = NoiseSchedule(config: .sdxl)
        for p in [PredictionType.epsilon, .vPrediction] {
            let w = s.debiasedEstimationWeights(timesteps: t, predictionType: p)
            assertClose(Tensor(shape: [w.count], values: w), try f.tensor("debiased.\(p.rawValue)"), atol: 1e-7, rtol: 1e-5, p.rawValue)
        }
        // t = 0: the SNR (~1/0.00085) is above the clamp, so the weight is 1/sqrt(1000).
        XCTAssertEqual(s.debiasedEstimationWeights(timesteps: [0], predictionType: .epsilon)[0], 1 / Float(1000).squareRoot(), accuracy: 1e-7)
    }

    func testTimestepRangeDrawMatchesSdScripts() throws {
        let f = try Fixtures.open("timestepweights")
        let s = NoiseSchedule(config: .sdxl)
        for (name, lo, hi) in [("range", 200, 800), ("fixed", 500, 500), ("full", 0, 1000)] {
            var g = TorchGenerator(seed: 99)
            let (noise, t) = s.trainingNoise(shape: [3, 4, 2, 2], offset: 0, minTimestep: lo, maxTimestep: hi, from: &g)
            assertClose(noise, try f.tensor("\(name).noise"), atol: 1e-6, rtol: 1e-6, "\(name) noise")
            XCTAssertEqual(t, try f.tensor("\(name).timesteps").toArray().map { Int($0) }, name)
            XCTAssertTrue(t.allSatisfy { name == "fixed" ? $0 == 500 : (lo..<hi).contains($0) }, "\(name): \(t)")
        }
    }
}
