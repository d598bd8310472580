import Foundation
import KoalaTensor

/// DPM-Solver++ (Lu et al. 2022), multistep, orders 1–3: diffusers'
/// `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"`.
///
/// Supports `solver_type` midpoint/heun, `lower_order_final`, `euler_at_final`,
/// `use_karras_sigmas`, `final_sigmas_type` zero/sigma_min, every `timestep_spacing`,
/// epsilon/v/sample prediction and zero-terminal-SNR betas.
public struct DPMSolverMultistepScheduler: Scheduler {
    public enum SolverType: String, Sendable { case midpoint, heun }

    public let config: SchedulerConfig
    public let schedule: NoiseSchedule
    public let solverType: SolverType
    let sigmaTable: SamplerSigmas
    public private(set) var timesteps: [Float] = []
    /// σ per inference step, plus the final sigma (count = timesteps + 1).
    public private(set) var sigmas: [Float] = []
    public var initNoiseSigma: Float { 1 }
    /// The step the next `step` call performs (nil before the first).
    public private(set) var stepIndex: Int?
    private var modelOutputs: [Tensor?] = []
    private var lowerOrderNums = 0

    public init(config: SchedulerConfig) throws {
        try config.checkNeutral(["thresholding", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                                 "use_flow_sigmas", "use_dynamic_shifting"])
        guard (1...3).contains(config.solverOrder) else {
            throw SchedulerConfigError.unsupported("solver_order", config.solverOrder, supported: ["1", "2", "3"])
        }
        // diffusers maps other solvers' names onto DPM-Solver++ midpoint the same way.
        guard ["dpmsolver++", "deis"].contains(config.algorithmType) else {
            throw SchedulerConfigError.unsupported("algorithm_type", "\"\(config.algorithmType)\"",
                                                   supported: ["dpmsolver++"])
        }
        switch config.solverType {
        case "midpoint", "logrho", "bh1", "bh2": solverType = .midpoint
        case "heun": solverType = .heun
        default: throw SchedulerConfigError.unsupported("solver_type", "\"\(config.solverType)\"",
                                                        supported: ["midpoint", "heun"])
        }
        if let v = config.varianceType {
            throw SchedulerConfigError.unsupported("variance_type", "\"\(v)\"", supported: ["null"],
                                                   hint: "learned-variance models are not supported")
        }
        guard config.lambdaMinClipped == -.infinity else {
            throw SchedulerConfigError.unsupported("lambda_min_clipped", config.lambdaMinClipped, supported: ["-Infinity"])
        }
        self.config = config
        schedule = NoiseSchedule(config: config)
        sigmaTable = SamplerSigmas(schedule: schedule, config: config)
    }

    public mutating func setTimesteps(_ n: Int) throws {
        try checkStepCount(n, config)
        let train = config.numTrainTimesteps
        var steps: [Int]
        switch config.timestepSpacing {
        case .linspace:
            steps = Array(NumPyMath.linspace(0, Double(train - 1), n + 1).map { Int(NumPyMath.round($0)) }.reversed().dropLast())
        case .leading:
            let ratio = train / (n + 1)
            steps = (1...n).reversed().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            steps = NumPyMath.arange(Double(train), 0, -Double(train) / Double(n)).map { Int(NumPyMath.round($0)) - 1 }
        }
        var stepSigmas: [Double]
        if config.useKarrasSigmas {
            let karras = sigmaTable.karras(sigmaMin: config.sigmaMin ?? Double(sigmaTable.train[0]),
                                           sigmaMax: config.sigmaMax ?? Double(sigmaTable.train[train - 1]), count: n)
            stepSigmas = karras.sigmas
            steps = karras.timesteps.map { Int(config.betaSchedule == .squaredcosCapV2 ? $0 : NumPyMath.round($0)) }
        } else {
            stepSigmas = steps.map { NumPyMath.interp(Double($0), sigmaTable.train) }
        }
        sigmas = stepSigmas.map { Float($0) } + [sigmaTable.final]
        timesteps = steps.map { Float($0) }
        modelOutputs = Array(repeating: nil, count: config.solverOrder)
        lowerOrderNums = 0
        stepIndex = nil
    }

    /// DPM-Solver++ is a data-prediction solver, so every step needs no input scaling.
    public func scaleModelInput(_ sample: Tensor, timestep: Float) -> Tensor { sample }

    /// (α_t, σ_t) of the variance-preserving process at noise level `sigma`.
    private func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    private func lambda(_ a: (alpha: Float, sigma: Float)) -> Float { log(a.alpha) - log(a.sigma) }

    /// The model output as a prediction of the clean sample x₀.
    private func dataPrediction(_ modelOutput: Tensor, sample: Tensor, sigma: Float) -> Tensor {
        let (alpha, sigmaT) = alphaSigma(sigma)
        switch config.predictionType {
        case .epsilon: return elementwise(sample, modelOutput) { x, m in (x - sigmaT * m) / alpha }
        case .vPrediction: return elementwise(sample, modelOutput) { x, m in alpha * x - sigmaT * m }
        case .sample: return modelOutput.copy()
        }
    }

    public mutating func step(modelOutput: Tensor, timestep: Float, sample: Tensor) -> Tensor {
        precondition(!timesteps.isEmpty, "call setTimesteps before step")
        if stepIndex == nil { stepIndex = indexForTimestep(timestep, in: timesteps) ?? timesteps.count - 1 }
        let i = stepIndex!, n = timesteps.count, order = config.solverOrder
        let lowerOrderFinal = i == n - 1 && (config.eulerAtFinal || (config.lowerOrderFinal && n < 15)
                                             || config.finalSigmasType == .zero)
        let lowerOrderSecond = i == n - 2 && config.lowerOrderFinal && n < 15

        let x0 = dataPrediction(modelOutput, sample: sample, sigma: sigmas[i])
        modelOutputs.removeFirst()
        modelOutputs.append(x0)

        let prev: Tensor
        if order == 1 || lowerOrderNums < 1 || lowerOrderFinal {
            prev = firstOrderUpdate(x0, sample: sample, i: i)
        } else if order == 2 || lowerOrderNums < 2 || lowerOrderSecond {
            prev = secondOrderUpdate(sample: sample, i: i)
        } else {
            prev = thirdOrderUpdate(sample: sample, i: i)
        }
        if lowerOrderNums < order { lowerOrderNums += 1 }
        stepIndex = i + 1
        return prev
    }

    /// x_t = (σ_t/σ_s) x − α_t (e^{−h} − 1) x₀  (equivalent to DDIM).
    private func firstOrderUpdate(_ m: Tensor, sample: Tensor, i: Int) -> Tensor {
        let t = alphaSigma(sigmas[i + 1]), s = alphaSigma(sigmas[i])
        let h = lambda(t) - lambda(s)
        let cx = t.sigma / s.sigma, cm = t.alpha * (exp(-h) - 1)
        return elementwise(sample, m) { x, m in cx * x - cm * m }
    }

    private func secondOrderUpdate(sample: Tensor, i: Int) -> Tensor {
        let t = alphaSigma(sigmas[i + 1]), s0 = alphaSigma(sigmas[i]), s1 = alphaSigma(sigmas[i - 1])
        let lt = lambda(t), l0 = lambda(s0), l1 = lambda(s1)
        let h = lt - l0, h0 = l0 - l1
        let r0 = h0 / h
        let invR0 = 1 / r0
        let cx = t.sigma / s0.sigma, c0 = t.alpha * (exp(-h) - 1)
        let m0 = modelOutputs[modelOutputs.count - 1]!, m1 = modelOutputs[modelOutputs.count - 2]!
        switch solverType {
        case .midpoint:
            let c1 = 0.5 * c0
            return elementwise(sample, m0, m1) { x, m0, m1 in
                let d1 = invR0 * (m0 - m1)
                return cx * x - c0 * m0 - c1 * d1
            }
        case .heun:
            let c1 = t.alpha * ((exp(-h) - 1) / h + 1)
            return elementwise(sample, m0, m1) { x, m0, m1 in
                let d1 = invR0 * (m0 - m1)
                return cx * x - c0 * m0 + c1 * d1
            }
        }
    }

    private func thirdOrderUpdate(sample: Tensor, i: Int) -> Tensor {
        let t = alphaSigma(sigmas[i + 1]), s0 = alphaSigma(sigmas[i])
        let s1 = alphaSigma(sigmas[i - 1]), s2 = alphaSigma(sigmas[i - 2])
        let lt = lambda(t), l0 = lambda(s0), l1 = lambda(s1), l2 = lambda(s2)
        let h = lt - l0, h0 = l0 - l1, h1 = l1 - l2
        let r0 = h0 / h, r1 = h1 / h
        let invR0 = 1 / r0, invR1 = 1 / r1, mix = r0 / (r0 + r1), invR01 = 1 / (r0 + r1)
        let e = exp(-h)
        let cx = t.sigma / s0.sigma
        let c0 = t.alpha * (e - 1)
        let c1 = t.alpha * ((e - 1) / h + 1)
        let c2 = t.alpha * ((e - 1 + h) / (h * h) - 0.5)
        let k = modelOutputs.count
        return elementwise(sample, modelOutputs[k - 1]!, modelOutputs[k - 2]!, modelOutputs[k - 3]!) { x, m0, m1, m2 in
            let d10 = invR0 * (m0 - m1), d11 = invR1 * (m1 - m2)
            let d1 = d10 + mix * (d10 - d11)
            let d2 = invR01 * (d10 - d11)
            return cx * x - c0 * m0 + c1 * d1 - c2 * d2
        }
    }
}
