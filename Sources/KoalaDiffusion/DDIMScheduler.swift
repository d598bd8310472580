import Foundation
import KoalaTensor

/// Deterministic DDIM (Song et al. 2020, η = 0): diffusers' `DDIMScheduler`.
///
/// Supports every `timestep_spacing`, epsilon/v/sample prediction, `clip_sample` with
/// `clip_sample_range`, and `set_alpha_to_one`.
public struct DDIMScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    /// ᾱ used after the last step: 1 with `set_alpha_to_one`, else ᾱ₀.
    let finalAlphaCumprod: Float
    public private(set) var timesteps: [Float] = []
    public var initNoiseSigma: Float { 1 }

    public init(config: SchedulerConfig) throws {
        try config.checkNeutral(["thresholding"])
        self.config = config
        schedule = NoiseSchedule(config: config)
        finalAlphaCumprod = config.setAlphaToOne ? 1 : schedule.alphasCumprod[0]
    }

    public mutating func setTimesteps(_ n: Int) throws {
        try checkStepCount(n, config)
        // DDIM steps through whole training timesteps: linspace's fractions are rounded.
        timesteps = config.spacedTimesteps(n).map { Float(NumPyMath.round($0)) }
    }

    public func scaleModelInput(_ sample: Tensor, timestep: Float) -> Tensor { sample }

    public mutating func step(modelOutput: Tensor, timestep: Float, sample: Tensor) -> Tensor {
        precondition(!timesteps.isEmpty, "call setTimesteps before step")
        let t = Int(timestep)
        precondition(t >= 0 && t < config.numTrainTimesteps, "timestep \(timestep) outside the training schedule")
        let prevT = t - config.numTrainTimesteps / timesteps.count
        let a = schedule.alphasCumprod[t]
        let aPrev = prevT >= 0 ? schedule.alphasCumprod[prevT] : finalAlphaCumprod
        let b = 1 - a
        let sa = a.squareRoot(), sb = b.squareRoot()
        // With η = 0 the noise term vanishes: std_dev_t = 0.
        let sPrev = aPrev.squareRoot(), dir = (1 - aPrev - 0).squareRoot()
        let clip = config.clipSample, r = Float(config.clipSampleRange)
        func clamp(_ x: Float) -> Float { clip ? min(max(x, -r), r) : x }
        switch config.predictionType {
        case .epsilon:
            return elementwise(sample, modelOutput) { x, m in
                sPrev * clamp((x - sb * m) / sa) + dir * m
            }
        case .sample:
            return elementwise(sample, modelOutput) { x, m in
                let x0 = clamp(m)
                return sPrev * x0 + dir * ((x - sa * m) / sb)
            }
        case .vPrediction:
            return elementwise(sample, modelOutput) { x, m in
                sPrev * clamp(sa * x - sb * m) + dir * (sa * m + sb * x)
            }
        }
    }
}
