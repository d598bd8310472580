import Foundation

/// The σ table of the sigma-based samplers (DPM-Solver++, Euler): σ per training timestep
/// and the σ after the last step that `final_sigmas_type` asks for.
struct SamplerSigmas {
    /// σ per training timestep (float32).
    let train: [Float]
    /// σ of timestep 0 (`sigma_min`) or 0 (`zero`).
    let final: Float

    init(schedule: NoiseSchedule, config: SchedulerConfig) {
        train = NoiseSchedule.sigmas(schedule.samplerAlphasCumprod(config))
        final = config.finalSigmasType == .sigmaMin ? train[0] : 0
    }

    /// `count` Karras σs between `sigma_min`/`sigma_max` (or the given bounds) and the
    /// fractional training timestep of each, by interpolation in log σ.
    func karras(sigmaMin: Double, sigmaMax: Double, count: Int) -> (sigmas: [Double], timesteps: [Double]) {
        let sigmas = NumPyMath.karrasSigmas(sigmaMin: sigmaMin, sigmaMax: sigmaMax, count: count)
        let logSigmas = NumPyMath.logSigmas(train)
        return (sigmas, sigmas.map { NumPyMath.sigmaToT($0, logSigmas: logSigmas) })
    }
}
