import Foundation
import KoalaTensor

/// How betas run from `beta_start` to `beta_end` over the training timesteps (diffusers' `beta_schedule`).
public enum BetaSchedule: String, Sendable, CaseIterable, Codable {
    case linear
    /// Linear in sqrt(beta), then squared: Stable Diffusion and SDXL.
    case scaledLinear = "scaled_linear"
    /// Glide's cosine schedule (`betas_for_alpha_bar`).
    case squaredcosCapV2 = "squaredcos_cap_v2"
}

/// What the denoising model predicts (diffusers' `prediction_type`).
public enum PredictionType: String, Sendable, CaseIterable, Codable {
    case epsilon
    case vPrediction = "v_prediction"
    /// The denoised sample itself (diffusers also accepts the spelling `original_sample` for Euler).
    case sample
}

/// How inference timesteps are spread over the training timesteps (diffusers' `timestep_spacing`).
public enum TimestepSpacing: String, Sendable, CaseIterable, Codable {
    case leading, trailing, linspace
}

/// The sigma after the last step (diffusers' `final_sigmas_type`).
public enum FinalSigmasType: String, Sendable, CaseIterable, Codable {
    case zero
    /// The smallest sigma of the training schedule.
    case sigmaMin = "sigma_min"
}

/// A problem in a scheduler configuration: which key, what is wrong, and what would work.
public struct SchedulerConfigError: Error, CustomStringConvertible, Equatable {
    /// The diffusers key at fault (`beta_schedule`, …).
    public let key: String
    public let description: String

    static func unsupported(_ key: String, _ value: Any, supported: [String], hint: String = "") -> SchedulerConfigError {
        let list = supported.map { "\"\($0)\"" }.joined(separator: ", ")
        return SchedulerConfigError(key: key, description:
            "scheduler config: \(key) = \(value) is not supported; use one of \(list)\(hint.isEmpty ? "" : " (\(hint))")")
    }

    static func invalid(_ key: String, _ message: String) -> SchedulerConfigError {
        SchedulerConfigError(key: key, description: "scheduler config: \(key) \(message)")
    }
}

/// The noise-schedule and sampler settings of a diffusers `scheduler/scheduler_config.json`.
///
/// Decoding accepts the JSON any diffusers scheduler writes: keys this project does not
/// use (`_diffusers_version`, `skip_prk_steps`, other schedulers' keys, …) are ignored, as
/// diffusers' `from_config` ignores keys a scheduler class does not take. Missing keys take
/// SDXL's values (the SDXL base 1.0 config states every shared key, so this only matters
/// for hand-written files). Values this project cannot honour are errors naming the key:
/// keys every scheduler reads are checked when decoding; keys only one sampler reads
/// (`solver_order`, `interpolation_type`, …) are checked when that sampler is built, so a
/// DPM-Solver config still drives Euler as it does in diffusers.
public struct SchedulerConfig: Sendable, Equatable, Codable {
    /// `_class_name`: the scheduler class the model folder names (SDXL: `EulerDiscreteScheduler`).
    public var className: String?
    public var numTrainTimesteps = 1000
    public var betaStart = 0.00085
    public var betaEnd = 0.012
    public var betaSchedule = BetaSchedule.scaledLinear
    /// Explicit betas (`trained_betas`), overriding `betaStart`/`betaEnd`/`betaSchedule`.
    public var trainedBetas: [Double]?
    public var predictionType = PredictionType.epsilon
    public var timestepSpacing = TimestepSpacing.leading
    public var stepsOffset = 1
    /// Rescale betas to zero terminal SNR (arXiv 2305.08891).
    public var rescaleBetasZeroSNR = false
    public var useKarrasSigmas = false
    /// Karras range overrides (`sigma_min`, `sigma_max`); nil takes the schedule's ends.
    public var sigmaMin: Double?
    public var sigmaMax: Double?
    public var finalSigmasType = FinalSigmasType.zero

    // DDIM
    public var clipSample = false
    public var clipSampleRange = 1.0
    public var setAlphaToOne = false

    // DPM-Solver (validated by DPMSolverMultistepScheduler)
    public var solverOrder = 2
    public var algorithmType = "dpmsolver++"
    public var solverType = "midpoint"
    public var lowerOrderFinal = true
    public var eulerAtFinal = false
    public var lambdaMinClipped = -Double.infinity
    public var varianceType: String?

    // Euler (validated by EulerDiscreteScheduler)
    public var interpolationType = "linear"
    public var timestepType = "discrete"

    // Options no sampler here implements; they must keep their neutral values.
    public var thresholding = false
    public var useExponentialSigmas = false
    public var useBetaSigmas = false
    public var useLuLambdas = false
    public var useFlowSigmas = false
    public var useDynamicShifting = false

    /// SDXL base 1.0's scheduler settings.
    public init() {}

    /// SDXL base 1.0's scheduler settings.
    public static let sdxl = SchedulerConfig()

    /// Parses `scheduler_config.json` text (Python's `-Infinity`/`NaN` literals accepted).
    public init(json: Data) throws {
        let decoder = JSONDecoder()
        decoder.allowsJSON5 = true
        do {
            self = try decoder.decode(SchedulerConfig.self, from: json)
        } catch let error as SchedulerConfigError {
            throw error
        } catch {
            throw SchedulerConfigError(key: "", description: "scheduler config is not valid JSON: \(error)")
        }
    }

    /// Reads a diffusers `scheduler_config.json` file.
    public init(contentsOf url: URL) throws {
        try self.init(json: try BoundedFile.read(url.path, limit: BoundedFile.textLimit))
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        // Null counts as absent: diffusers writes null for unset optional arguments.
        func get<T: Decodable>(_ key: String, _ type: T.Type, _ expected: String) throws -> T? {
            let k = Key(key)
            guard c.contains(k), !((try? c.decodeNil(forKey: k)) ?? false) else { return nil }
            do { return try c.decode(T.self, forKey: k) } catch {
                throw SchedulerConfigError.invalid(key, "must be \(expected)")
            }
        }
        func choice<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) throws -> E? where E.RawValue == String {
            guard let raw = try get(key, String.self, "a string") else { return nil }
            guard let v = E(rawValue: raw) else {
                throw SchedulerConfigError.unsupported(key, "\"\(raw)\"", supported: E.allCases.map(\.rawValue))
            }
            return v
        }
        className = try get("_class_name", String.self, "a string")
        if let v = try get("num_train_timesteps", Int.self, "an integer") {
            guard v >= 2 else { throw SchedulerConfigError.invalid("num_train_timesteps", "must be at least 2, got \(v)") }
            numTrainTimesteps = v
        }
        if let v = try get("beta_start", Double.self, "a number") { betaStart = v }
        if let v = try get("beta_end", Double.self, "a number") { betaEnd = v }
        if let v = try choice("beta_schedule", BetaSchedule.self) { betaSchedule = v }
        trainedBetas = try get("trained_betas", [Double].self, "null or a list of numbers")
        if let t = trainedBetas, t.count != numTrainTimesteps {
            throw SchedulerConfigError.invalid("trained_betas", "has \(t.count) values; num_train_timesteps is \(numTrainTimesteps)")
        }
        if let raw = try get("prediction_type", String.self, "a string") {
            // Euler accepts `original_sample` as a synonym of `sample`.
            guard let v = PredictionType(rawValue: raw == "original_sample" ? "sample" : raw) else {
                throw SchedulerConfigError.unsupported("prediction_type", "\"\(raw)\"",
                                                       supported: PredictionType.allCases.map(\.rawValue))
            }
            predictionType = v
        }
        if let v = try choice("timestep_spacing", TimestepSpacing.self) { timestepSpacing = v }
        if let v = try get("steps_offset", Int.self, "an integer") { stepsOffset = v }
        if let v = try get("rescale_betas_zero_snr", Bool.self, "true or false") { rescaleBetasZeroSNR = v }
        if let v = try get("use_karras_sigmas", Bool.self, "true or false") { useKarrasSigmas = v }
        sigmaMin = try get("sigma_min", Double.self, "null or a number")
        sigmaMax = try get("sigma_max", Double.self, "null or a number")
        if let v = try choice("final_sigmas_type", FinalSigmasType.self) { finalSigmasType = v }
        if let v = try get("clip_sample", Bool.self, "true or false") { clipSample = v }
        if let v = try get("clip_sample_range", Double.self, "a number") { clipSampleRange = v }
        if let v = try get("set_alpha_to_one", Bool.self, "true or false") { setAlphaToOne = v }
        if let v = try get("solver_order", Int.self, "an integer") { solverOrder = v }
        if let v = try get("algorithm_type", String.self, "a string") { algorithmType = v }
        if let v = try get("solver_type", String.self, "a string") { solverType = v }
        if let v = try get("lower_order_final", Bool.self, "true or false") { lowerOrderFinal = v }
        if let v = try get("euler_at_final", Bool.self, "true or false") { eulerAtFinal = v }
        if let v = try get("lambda_min_clipped", Double.self, "a number") { lambdaMinClipped = v }
        varianceType = try get("variance_type", String.self, "null or a string")
        if let v = try get("interpolation_type", String.self, "a string") { interpolationType = v }
        if let v = try get("timestep_type", String.self, "a string") { timestepType = v }
        if let v = try get("thresholding", Bool.self, "true or false") { thresholding = v }
        if let v = try get("use_exponential_sigmas", Bool.self, "true or false") { useExponentialSigmas = v }
        if let v = try get("use_beta_sigmas", Bool.self, "true or false") { useBetaSigmas = v }
        if let v = try get("use_lu_lambdas", Bool.self, "true or false") { useLuLambdas = v }
        if let v = try get("use_flow_sigmas", Bool.self, "true or false") { useFlowSigmas = v }
        if let v = try get("use_dynamic_shifting", Bool.self, "true or false") { useDynamicShifting = v }
        if !(betaStart > 0 && betaEnd > 0 && betaStart < 1 && betaEnd < 1) && trainedBetas == nil
            && betaSchedule != .squaredcosCapV2 {
            throw SchedulerConfigError.invalid("beta_start", "and beta_end must lie in (0, 1), got \(betaStart) and \(betaEnd)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        func put<T: Encodable>(_ key: String, _ v: T?) throws { if let v { try c.encode(v, forKey: Key(key)) } }
        try put("_class_name", className)
        try put("num_train_timesteps", numTrainTimesteps)
        try put("beta_start", betaStart)
        try put("beta_end", betaEnd)
        try put("beta_schedule", betaSchedule.rawValue)
        try put("trained_betas", trainedBetas)
        try put("prediction_type", predictionType.rawValue)
        try put("timestep_spacing", timestepSpacing.rawValue)
        try put("steps_offset", stepsOffset)
        try put("rescale_betas_zero_snr", rescaleBetasZeroSNR)
        try put("use_karras_sigmas", useKarrasSigmas)
        try put("sigma_min", sigmaMin)
        try put("sigma_max", sigmaMax)
        try put("final_sigmas_type", finalSigmasType.rawValue)
        try put("clip_sample", clipSample)
        try put("clip_sample_range", clipSampleRange)
        try put("set_alpha_to_one", setAlphaToOne)
        try put("solver_order", solverOrder)
        try put("algorithm_type", algorithmType)
        try put("solver_type", solverType)
        try put("lower_order_final", lowerOrderFinal)
        try put("euler_at_final", eulerAtFinal)
        if lambdaMinClipped.isFinite { try put("lambda_min_clipped", lambdaMinClipped) }
        try put("variance_type", varianceType)
        try put("interpolation_type", interpolationType)
        try put("timestep_type", timestepType)
        try put("thresholding", thresholding)
        try put("use_exponential_sigmas", useExponentialSigmas)
        try put("use_beta_sigmas", useBetaSigmas)
        try put("use_lu_lambdas", useLuLambdas)
        try put("use_flow_sigmas", useFlowSigmas)
        try put("use_dynamic_shifting", useDynamicShifting)
    }

    /// Errors for options that no sampler here implements, named by key.
    func checkNeutral(_ keys: [String]) throws {
        let flags: [String: Bool] = [
            "thresholding": thresholding, "use_exponential_sigmas": useExponentialSigmas,
            "use_beta_sigmas": useBetaSigmas, "use_lu_lambdas": useLuLambdas,
            "use_flow_sigmas": useFlowSigmas, "use_dynamic_shifting": useDynamicShifting,
        ]
        for key in keys where flags[key] == true {
            throw SchedulerConfigError.invalid(key, "= true is not supported (no sampler here implements it); set it to false")
        }
    }
}
