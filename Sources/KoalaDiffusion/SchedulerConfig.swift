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

    fileprivate struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Every key this project reads, once: its diffusers name, the property it sets and the
    /// check its value must pass. Decoding and encoding both walk this table, in this order.
    private static var fields: [Field] {
        [
            Field("_class_name", \.className, expected: "a string"),
            Field("num_train_timesteps", \.numTrainTimesteps) { v, _ in v >= 2 ? nil : "must be at least 2, got \(v)" },
            Field("beta_start", \.betaStart),
            Field("beta_end", \.betaEnd),
            Field("beta_schedule", \.betaSchedule),
            Field("trained_betas", \.trainedBetas) { v, config in
                guard let v, v.count != config.numTrainTimesteps else { return nil }
                return "has \(v.count) values; num_train_timesteps is \(config.numTrainTimesteps)"
            },
            Field("prediction_type", \.predictionType),
            Field("timestep_spacing", \.timestepSpacing),
            Field("steps_offset", \.stepsOffset),
            Field("rescale_betas_zero_snr", \.rescaleBetasZeroSNR),
            Field("use_karras_sigmas", \.useKarrasSigmas),
            Field("sigma_min", \.sigmaMin),
            Field("sigma_max", \.sigmaMax),
            Field("final_sigmas_type", \.finalSigmasType),
            Field("clip_sample", \.clipSample),
            Field("clip_sample_range", \.clipSampleRange),
            Field("set_alpha_to_one", \.setAlphaToOne),
            Field("solver_order", \.solverOrder),
            Field("algorithm_type", \.algorithmType),
            Field("solver_type", \.solverType),
            Field("lower_order_final", \.lowerOrderFinal),
            Field("euler_at_final", \.eulerAtFinal),
            Field("lambda_min_clipped", \.lambdaMinClipped),
            Field("variance_type", \.varianceType),
            Field("interpolation_type", \.interpolationType),
            Field("timestep_type", \.timestepType),
            Field("thresholding", \.thresholding),
            Field("use_exponential_sigmas", \.useExponentialSigmas),
            Field("use_beta_sigmas", \.useBetaSigmas),
            Field("use_lu_lambdas", \.useLuLambdas),
            Field("use_flow_sigmas", \.useFlowSigmas),
            Field("use_dynamic_shifting", \.useDynamicShifting),
        ]
    }

    /// Absent keys keep the defaults declared above, as diffusers' `from_config` keeps the
    /// scheduler's own argument defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        self.init()
        for field in Self.fields { try field.decode(&self, c) }
        if !(betaStart > 0 && betaEnd > 0 && betaStart < 1 && betaEnd < 1) && trainedBetas == nil
            && betaSchedule != .squaredcosCapV2 {
            throw SchedulerConfigError.invalid("beta_start", "and beta_end must lie in (0, 1), got \(betaStart) and \(betaEnd)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for field in Self.fields { try field.encode(self, &c) }
    }

    /// Errors for options that no sampler here implements, named by key.
    func checkNeutral(_ keys: [String]) throws {
        for key in keys where Self.fields.first(where: { $0.name == key })?.isTrue(self) == true {
            throw SchedulerConfigError.invalid(key, "= true is not supported (no sampler here implements it); set it to false")
        }
    }
}

/// One row of `SchedulerConfig.fields`.
private struct Field {
    let name: String
    let decode: (inout SchedulerConfig, KeyedDecodingContainer<SchedulerConfig.Key>) throws -> Void
    let encode: (SchedulerConfig, inout KeyedEncodingContainer<SchedulerConfig.Key>) throws -> Void
    /// Whether the key holds `true` (for `checkNeutral`).
    let isTrue: (SchedulerConfig) -> Bool

    /// `expected` replaces the type's wording in errors; `check` returns what is wrong with a
    /// decoded value (given the keys decoded before it), or nil.
    init<V: SchedulerConfigValue>(_ name: String, _ path: WritableKeyPath<SchedulerConfig, V>, expected: String? = nil,
                                  check: ((V, SchedulerConfig) -> String?)? = nil) {
        self.name = name
        let key = SchedulerConfig.Key(name)
        decode = { config, c in
            guard let v = try V.decode(c, key, expected: expected ?? V.expected) else { return }
            if let problem = check?(v, config) { throw SchedulerConfigError.invalid(name, problem) }
            config[keyPath: path] = v
        }
        encode = { config, c in try config[keyPath: path].encode(into: &c, key) }
        isTrue = { ($0[keyPath: path] as? Bool) == true }
    }
}

/// A type a scheduler config key holds, and how it reads from and writes to the JSON.
private protocol SchedulerConfigValue: Codable {
    /// What the JSON must hold, for errors ("an integer").
    static var expected: String { get }
    /// The value at `key`; nil when absent or null (diffusers writes null for unset optional
    /// arguments), which keeps the default.
    static func decode(_ c: KeyedDecodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key,
                       expected: String) throws -> Self?
    func encode(into c: inout KeyedEncodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key) throws
}

extension SchedulerConfigValue {
    static func decode(_ c: KeyedDecodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key,
                       expected: String) throws -> Self? {
        guard c.contains(key), !((try? c.decodeNil(forKey: key)) ?? false) else { return nil }
        do { return try c.decode(Self.self, forKey: key) } catch {
            throw SchedulerConfigError.invalid(key.stringValue, "must be \(expected)")
        }
    }

    func encode(into c: inout KeyedEncodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key) throws {
        try c.encode(self, forKey: key)
    }
}

extension Int: SchedulerConfigValue { fileprivate static var expected: String { "an integer" } }
extension String: SchedulerConfigValue { fileprivate static var expected: String { "a string" } }
extension Bool: SchedulerConfigValue { fileprivate static var expected: String { "true or false" } }
extension Array: SchedulerConfigValue where Element == Double { fileprivate static var expected: String { "a list of numbers" } }

extension Double: SchedulerConfigValue {
    fileprivate static var expected: String { "a number" }

    /// JSON has no infinities: `lambda_min_clipped = -inf` (diffusers' default) is left out.
    fileprivate func encode(into c: inout KeyedEncodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key) throws {
        if isFinite { try c.encode(self, forKey: key) }
    }
}

extension Optional: SchedulerConfigValue where Wrapped: SchedulerConfigValue {
    fileprivate static var expected: String { "null or " + Wrapped.expected }

    fileprivate static func decode(_ c: KeyedDecodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key,
                                   expected: String) throws -> Self? {
        try Wrapped.decode(c, key, expected: expected).map { .some($0) }
    }

    fileprivate func encode(into c: inout KeyedEncodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key) throws {
        try self?.encode(into: &c, key)
    }
}

/// A key whose string names one of a set of choices.
private protocol SchedulerConfigChoice: SchedulerConfigValue, RawRepresentable<String>, CaseIterable {
    /// The choice a config spelling names.
    static func named(_ raw: String) -> Self?
}

extension SchedulerConfigChoice {
    fileprivate static var expected: String { String.expected }
    fileprivate static func named(_ raw: String) -> Self? { Self(rawValue: raw) }

    fileprivate static func decode(_ c: KeyedDecodingContainer<SchedulerConfig.Key>, _ key: SchedulerConfig.Key,
                                   expected: String) throws -> Self? {
        guard let raw = try String.decode(c, key, expected: expected) else { return nil }
        guard let v = named(raw) else {
            throw SchedulerConfigError.unsupported(key.stringValue, "\"\(raw)\"", supported: allCases.map(\.rawValue))
        }
        return v
    }
}

extension BetaSchedule: SchedulerConfigChoice {}
extension TimestepSpacing: SchedulerConfigChoice {}
extension FinalSigmasType: SchedulerConfigChoice {}
extension PredictionType: SchedulerConfigChoice {
    /// Euler accepts `original_sample` as a synonym of `sample`.
    fileprivate static func named(_ raw: String) -> PredictionType? { PredictionType(rawValue: raw == "original_sample" ? "sample" : raw) }
}
