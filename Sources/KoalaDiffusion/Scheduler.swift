import KoalaTensor

/// A sampler that turns noise into a sample in a fixed number of model evaluations,
/// following diffusers' scheduler interface.
///
/// Use it as the SDXL pipeline does: `setTimesteps(n)`; `x = noise · initNoiseSigma`; for
/// each `t` in `timesteps`: `input = scaleModelInput(x, timestep: t)`, run the model on
/// `input` at `t`, `x = step(modelOutput:timestep:sample:)`. Results are plain tensors
/// without autograd history.
public protocol Scheduler: Sendable {
    var config: SchedulerConfig { get }
    /// Timesteps to evaluate the model at, in order (fractional for Euler with Karras sigmas).
    var timesteps: [Float] { get }
    /// The factor that scales unit-variance noise into the first sample.
    var initNoiseSigma: Float { get }
    /// Prepares `numInferenceSteps` steps and resets the solver state.
    mutating func setTimesteps(_ numInferenceSteps: Int) throws
    /// The model input for the current step (Euler divides by sqrt(σ² + 1); the others pass `sample` through).
    func scaleModelInput(_ sample: Tensor, timestep: Float) -> Tensor
    /// One solver step from `sample` at `timestep` to the next timestep.
    mutating func step(modelOutput: Tensor, timestep: Float, sample: Tensor) -> Tensor
}

/// The samplers the CLI offers.
public enum SchedulerKind: String, Sendable, CaseIterable {
    case dpmSolverPlusPlus = "dpm-solver++"
    case euler
    case ddim

    /// A scheduler of this kind configured from `config` (as diffusers' `from_config`).
    public func make(config: SchedulerConfig) throws -> any Scheduler {
        switch self {
        case .dpmSolverPlusPlus: return try DPMSolverMultistepScheduler(config: config)
        case .euler: return try EulerDiscreteScheduler(config: config)
        case .ddim: return try DDIMScheduler(config: config)
        }
    }
}

/// Error for an inference step count a scheduler cannot run.
func checkStepCount(_ n: Int, _ config: SchedulerConfig) throws {
    guard n >= 1, n <= config.numTrainTimesteps else {
        throw SchedulerConfigError.invalid("num_inference_steps",
            "must be between 1 and num_train_timesteps (\(config.numTrainTimesteps)), got \(n)")
    }
}

extension SchedulerConfig {
    /// The `n` inference timesteps, descending, that `timestep_spacing` picks as diffusers'
    /// Euler and DDIM schedulers do (linspace's are fractional; DPM-Solver spaces its own).
    func spacedTimesteps(_ n: Int) -> [Double] {
        let train = numTrainTimesteps
        switch timestepSpacing {
        case .linspace:
            return NumPyMath.linspace(0, Double(train - 1), n).reversed()
        case .leading:
            let ratio = train / n
            return (0..<n).reversed().map { Double($0 * ratio + stepsOffset) }
        case .trailing:
            return NumPyMath.arange(Double(train), 0, -Double(train) / Double(n)).map { NumPyMath.round($0) - 1 }
        }
    }
}

/// Position of `timestep` in `timesteps` as diffusers' `index_for_timestep` finds it: the
/// second match when it occurs twice (so a restart mid-schedule does not skip a step).
func indexForTimestep(_ timestep: Float, in timesteps: [Float]) -> Int? {
    let matches = timesteps.indices.filter { timesteps[$0] == timestep }
    return matches.count > 1 ? matches[1] : matches.first
}

// Elementwise kernels: each closure applies, per element, the float32 operations diffusers
// performs tensor by tensor, in the same order, so results round identically.

func elementwise(_ a: Tensor, _ f: (Float) -> Float) -> Tensor {
    let a = a.contiguous(), out = Tensor(empty: a.shape)
    let pa = a.data, po = out.data
    for i in 0..<a.count { po[i] = f(pa[i]) }
    return out
}

func elementwise(_ a: Tensor, _ b: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
    precondition(a.shape == b.shape, "scheduler tensors differ in shape: \(a.shape) vs \(b.shape)")
    let a = a.contiguous(), b = b.contiguous(), out = Tensor(empty: a.shape)
    let pa = a.data, pb = b.data, po = out.data
    for i in 0..<a.count { po[i] = f(pa[i], pb[i]) }
    return out
}

func elementwise(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ f: (Float, Float, Float) -> Float) -> Tensor {
    precondition(a.shape == b.shape && a.shape == c.shape,
                 "scheduler tensors differ in shape: \(a.shape), \(b.shape), \(c.shape)")
    let a = a.contiguous(), b = b.contiguous(), c = c.contiguous(), out = Tensor(empty: a.shape)
    let pa = a.data, pb = b.data, pc = c.data, po = out.data
    for i in 0..<a.count { po[i] = f(pa[i], pb[i], pc[i]) }
    return out
}

func elementwise(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ d: Tensor,
                 _ f: (Float, Float, Float, Float) -> Float) -> Tensor {
    precondition(a.shape == b.shape && a.shape == c.shape && a.shape == d.shape,
                 "scheduler tensors differ in shape: \(a.shape), \(b.shape), \(c.shape), \(d.shape)")
    let a = a.contiguous(), b = b.contiguous(), c = c.contiguous(), d = d.contiguous(), out = Tensor(empty: a.shape)
    let pa = a.data, pb = b.data, pc = c.data, pd = d.data, po = out.data
    for i in 0..<a.count { po[i] = f(pa[i], pb[i], pc[i], pd[i]) }
    return out
}
