import XCTest
import KoalaTestSupport
import KoalaTensor
@testable import KoalaDiffusion

/// Beta schedules and the training-side forward process against diffusers.
final class NoiseScheduleTests: XCTestCase {
    func testBetaSchedulesMatchDiffusers() throws {
        let f = try Fixtures.open("schedulers")
        var linear = SchedulerConfig.sdxl
        (linear.betaSchedule, linear.betaStart, linear.betaEnd) = (.linear, 0.0001, 0.02)
        var cosine = SchedulerConfig.sdxl
        cosine.betaSchedule = .squaredcosCapV2
        var zeroSNR = SchedulerConfig.sdxl
        zeroSNR.rescaleBetasZeroSNR = true
        for (name, config) in [("scaled_linear", SchedulerConfig.sdxl), ("linear", linear),
                               ("cosine", cosine), ("zero_snr", zeroSNR)] {
            let s = NoiseSchedule(config: config)
            if name == "zero_snr" {
                // The rescale takes square roots, and torch's float32 sqrt on CPU (MKL) is not
                // always correctly rounded; the one-ulp differences grow through the
                // cancellations of the rescale (sqrt(ᾱ) − sqrt(ᾱ_T), 1 − α).
                assertClose(Tensor(shape: [s.betas.count], values: s.betas), try f.tensor("schedule.\(name).betas"),
                            atol: 2e-7, rtol: 1e-4, "\(name) betas")
                assertClose(Tensor(shape: [s.alphasCumprod.count], values: s.alphasCumprod),
                            try f.tensor("schedule.\(name).alphas_cumprod"), atol: 1e-8, rtol: 1e-4, "\(name) alphas_cumprod")
            } else {
                XCTAssertEqual(s.betas, try f.tensor("schedule.\(name).betas").toArray(), "\(name) betas")
                XCTAssertEqual(s.alphasCumprod, try f.tensor("schedule.\(name).alphas_cumprod").toArray(), "\(name) alphas_cumprod")
            }
        }
    }

    func testAddNoiseVelocityAndSNRMatchDiffusers() throws {
        let f = try Fixtures.open("schedulers")
        let s = NoiseSchedule(config: .sdxl)
        let x0 = try f.tensor("ddpm.x0"), noise = try f.tensor("ddpm.noise")
        let t = try f.tensor("ddpm.timesteps").toArray().map { Int($0) }
        assertClose(s.addNoise(original: x0, noise: noise, timesteps: t), try f.tensor("ddpm.noisy"),
                    atol: 1e-6, rtol: 1e-6, "add_noise")
        assertClose(s.velocity(sample: x0, noise: noise, timesteps: t), try f.tensor("ddpm.velocity"),
                    atol: 1e-6, rtol: 1e-6, "velocity")
        let snr = s.snr(timesteps: Array(0..<1000))
        assertClose(Tensor(shape: [1000], values: snr), try f.tensor("ddpm.snr"), atol: 0, rtol: 1e-6, "snr")
    }
}
