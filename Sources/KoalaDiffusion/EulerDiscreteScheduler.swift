import Foundation
import KoalaTensor

/// Euler's method on the probability-flow ODE in σ (Karras et al. 2022): diffusers'
/// `EulerDiscreteScheduler` without churn (s_churn = 0), the KOALA paper's sampler.
///
/// Supports every `timestep_spacing`, `interpolation_type` linear, `use_karras_sigmas`
/// (with `sigma_min`/`sigma_max`), `final_sigmas_type`, epsilon/v/sample prediction and
/// zero-terminal-SNR betas.
public struct EulerDiscreteScheduler: Scheduler {
    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    let sigmaTable: SamplerSigmas
    public private(set) var timesteps: [Float] = []
    /// σ per inference step, plus the final sigma (count = timesteps + 1).
    public private(set) var sigmas: [Float] = []
    /// The step the next `step` call performs (nil before the first).
    public private(set) var stepIndex: Int?

    public init(config: SchedulerConfig) throws {
        try config.checkNeutral(["use_exponential_sigmas", "use_beta_sigmas"])
        guard config.interpolationType == "linear" else {
            throw SchedulerConfigError.unsupported("interpolation_type", "\"\(config.interpolationType)\"", supported: ["linear"])
        }
        guard ["discrete", "continuous"].contains(config.timestepType),
              !(config.timestepType == "continuous" && config.predictionType == .vPrediction) else {
            throw SchedulerConfigError.unsupported("timestep_type", "\"\(config.timestepType)\"", supported: ["discrete"])
        }
        self.config = config
        schedule = NoiseSchedule(config: config)
        sigmaTable = SamplerSigmas(schedule: schedule, config: config)
    }

    public mutating func setTimesteps(_ n: Int) throws {
        try checkStepCount(n, config)
        var steps = config.spacedTimesteps(n).map { Float($0) }
        var stepSigmas = steps.map { NumPyMath.interp(Double($0), sigmaTable.train) }
        if config.useKarrasSigmas {
            let karras = sigmaTable.karras(sigmaMin: config.sigmaMin ?? stepSigmas[stepSigmas.count - 1],
                                           sigmaMax: config.sigmaMax ?? stepSigmas[0], count: n)
            stepSigmas = karras.sigmas
            steps = karras.timesteps.map { Float($0) }
        }
        sigmas = stepSigmas.map { Float($0) } + [sigmaTable.final]
        timesteps = steps
        stepIndex = nil
    }

    /// The largest sigma, or sqrt(σ_max² + 1) for `leading` spacing, as diffusers.
    public var initNoiseSigma: Float {
        let maxSigma = sigmas.max() ?? 0
        return config.timestepSpacing == .leading ? (maxSigma * maxSigma + 1).squareRoot() : maxSigma
    }

    private func index(_ timestep: Float) -> Int {
        if let stepIndex { return stepIndex }
        guard let i = indexForTimestep(timestep, in: timesteps) else {
            preconditionFailure("timestep \(timestep) is not one of the scheduler's timesteps")
        }
        return i
    }

    /// x / sqrt(σ² + 1): the model sees unit-variance input.
    public func scaleModelInput(_ sample: Tensor, timestep: Float) -> Tensor {
        precondition(!timesteps.isEmpty, "call setTimesteps before scaleModelInput")
        let sigma = sigmas[index(timestep)]
        let scale = (sigma * sigma + 1).squareRoot()
        return elementwise(sample) { $0 / scale }
    }

    public mutating func step(modelOutput: Tensor, timestep: Float, sample: Tensor) -> Tensor {
        precondition(!timesteps.isEmpty, "call setTimesteps before step")
        let i = index(timestep)
        let sigma = sigmas[i]
        let dt = sigmas[i + 1] - sigma
        let prev: Tensor
        switch config.predictionType {
        case .epsilon:
            prev = elementwise(sample, modelOutput) { x, m in
                let x0 = x - sigma * m
                return x + ((x - x0) / sigma) * dt
            }
        case .vPrediction:
            let cm = -sigma / (sigma * sigma + 1).squareRoot(), dx = sigma * sigma + 1
            prev = elementwise(sample, modelOutput) { x, m in
                let x0 = m * cm + x / dx
                return x + ((x - x0) / sigma) * dt
            }
        case .sample:
            prev = elementwise(sample, modelOutput) { x, x0 in x + ((x - x0) / sigma) * dt }
        }
        stepIndex = i + 1
        return prev
    }
}
