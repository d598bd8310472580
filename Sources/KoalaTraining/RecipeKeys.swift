import Foundation
import KoalaDiffusion
import KoalaTensor

// Every recipe key once, section by section: its TOML name, the property it sets (whose
// initial value in TrainingRecipe.swift is the default) and the checks on its own value.
// Reading TOML, writing it, the JSON form and `validate()` all walk these tables, in this
// order; rules that involve several keys are in RecipeValidation.swift. recipes/README.md
// documents every key.

extension TrainingRecipe: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("data", \.data), RecipeKey("prior", \.prior), RecipeKey("model", \.model),
            RecipeKey("optim", \.optim), RecipeKey("train", \.train), RecipeKey("checkpoint", \.checkpoint),
            RecipeKey("validation", \.validation), RecipeKey("ema", \.ema),
        ]
    }
}

extension TrainingRecipe.DataSection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("resolution", \.resolution) { v, key in
                try require(v, in: 64...4096, key)
                try require(v % 8 == 0, key, "a multiple of 8 (the VAE downsamples by 8)", "\(v)")
            },
            RecipeKey("center_crop", \.centerCrop),
            RecipeKey("random_flip", \.randomFlip),
            RecipeKey("aspect_buckets", \.aspectBuckets),
            RecipeKey("instance_prompt", \.instancePrompt) { v, key in
                try requireTemplate(v, key, allowed: ["token", "class"])
                if !v.contains("{token}") {
                    throw RecipeError.conflict(key: key, reason: "must contain {token} (the subject's identifier), got \"\(v)\"")
                }
            },
            RecipeKey("latents", \.latents),
        ]
    }
}

extension TrainingRecipe.PriorSection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("enabled", \.enabled),
            RecipeKey("class_prompt", \.classPrompt) { v, key in
                try require(!v.trimmingCharacters(in: .whitespaces).isEmpty, key, "a non-empty prompt", "\"\"")
                if v.contains("{token}") {
                    throw RecipeError.conflict(key: key, reason: "must not contain {token}: class images show the class, not the subject")
                }
                try requireTemplate(v, key, allowed: ["class"])
            },
            RecipeKey("num_class_images", \.numClassImages) { v, key in try require(v, in: 1...10_000, key) },
            RecipeKey("prior_loss_weight", \.priorLossWeight) { v, key in
                try require(v >= 0 && v <= 100, key, "in 0...100", formatNumber(v))
            },
            RecipeKey("generation_steps", \.generationSteps) { v, key in try require(v, in: 1...1000, key) },
            RecipeKey("generation_guidance", \.generationGuidance) { v, key in
                try require(v >= 0 && v <= 100, key, "in 0...100", formatNumber(v))
            },
        ]
    }
}

extension TrainingRecipe.ModelSection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("train", \.train),
            RecipeKey("gradient_checkpointing", \.gradientCheckpointing),
            RecipeKey("precision", \.precision),
            RecipeKey("lora", \.lora),
        ]
    }
}

extension TrainingRecipe.LoRASection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("rank", \.rank) { v, key in try require(v, in: 1...1024, key) },
            RecipeKey("alpha", \.alpha, ifSet: { v, key in try require(v > 0 && v.isFinite, key, "> 0", formatNumber(v)) }),
            RecipeKey("dropout", \.dropout) { v, key in try require(v >= 0 && v < 1, key, ">= 0 and < 1", formatNumber(v)) },
            RecipeKey("targets", \.targets) { v, key in
                try require(!v.isEmpty, key, "a non-empty array", "[]")
                try require(Set(v).count == v.count, key, "free of duplicates",
                            "[\(v.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))]")
            },
            RecipeKey("text_encoders", \.textEncoders),
        ]
    }
}

extension TrainingRecipe.OptimSection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("optimizer", \.optimizer),
            RecipeKey("learning_rate", \.learningRate) { v, key in
                try require(v > 0 && v <= 1, key, "> 0 and <= 1", formatNumber(v))
            },
            RecipeKey("betas", \.betas) { v, key in
                try require(v.count == 2, key, "two numbers [beta1, beta2]", "\(v.count) numbers")
                for (i, b) in v.enumerated() { try require(b >= 0 && b < 1, "\(key)[\(i)]", ">= 0 and < 1", formatNumber(b)) }
            },
            RecipeKey("eps", \.eps) { v, key in try require(v > 0 && v <= 1, key, "> 0 and <= 1", formatNumber(v)) },
            RecipeKey("weight_decay", \.weightDecay, ifSet: { v, key in
                try require(v >= 0 && v <= 1, key, "in 0...1", formatNumber(v))
            }),
            RecipeKey("max_grad_norm", \.maxGradNorm) { v, key in
                try require(v >= 0 && v.isFinite, key, ">= 0 (0 turns clipping off)", formatNumber(v))
            },
            RecipeKey("lr_scheduler", \.lrScheduler),
            RecipeKey("warmup_steps", \.warmupSteps) { v, key in try require(v, in: 0...Int.max, key) },
        ]
    }
}

extension TrainingRecipe.TrainSection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("batch_size", \.batchSize) { v, key in try require(v, in: 1...256, key) },
            RecipeKey("gradient_accumulation", \.gradientAccumulation) { v, key in try require(v, in: 1...1024, key) },
            RecipeKey("max_steps", \.maxSteps) { v, key in try require(v, in: 1...10_000_000, key) },
            RecipeKey("seed", \.seed) { v, key in try requireSeed(v, key) },
            RecipeKey("rng", \.rng),
            RecipeKey("prediction_type", \.predictionType),
            RecipeKey("min_snr_gamma", \.minSNRGamma, ifSet: { v, key in
                try require(v > 0 && v.isFinite, key, "> 0", formatNumber(v))
            }),
            RecipeKey("debiased_estimation", \.debiasedEstimation),
            RecipeKey("min_timestep", \.minTimestep) { v, key in try require(v, in: 0...TrainingRecipe.maxTimesteps - 1, key) },
            RecipeKey("max_timestep", \.maxTimestep, ifSet: { v, key in try require(v, in: 1...TrainingRecipe.maxTimesteps, key) }),
            RecipeKey("noise_offset", \.noiseOffset) { v, key in try require(v >= 0 && v <= 1, key, "in 0...1", formatNumber(v)) },
            RecipeKey("log_every", \.logEvery) { v, key in try require(v, in: 1...Int.max, key) },
            RecipeKey("loss_smoothing", \.lossSmoothing) { v, key in
                try require(v >= 0 && v < 1, key, ">= 0 and < 1", formatNumber(v))
            },
        ]
    }
}

extension TrainingRecipe.CheckpointSection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("every", \.every) { v, key in try require(v, in: 0...Int.max, key) },
            RecipeKey("keep_last", \.keepLast, ifSet: { v, key in try require(v, in: 1...Int.max, key) }),
            RecipeKey("format", \.format),
        ]
    }
}

extension TrainingRecipe.ValidationSection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("prompts", \.prompts) { v, key in
                for (i, p) in v.enumerated() {
                    try require(!p.trimmingCharacters(in: .whitespaces).isEmpty, "\(key)[\(i)]", "a non-empty prompt", "\"\(p)\"")
                    try requireTemplate(p, "\(key)[\(i)]", allowed: ["token", "class"])
                }
            },
            RecipeKey("negative_prompt", \.negativePrompt, ifSet: { v, key in
                try requireTemplate(v, key, allowed: ["token", "class"])
            }),
            RecipeKey("every", \.every) { v, key in try require(v, in: 0...Int.max, key) },
            RecipeKey("steps", \.steps) { v, key in try require(v, in: 1...1000, key) },
            RecipeKey("scheduler", \.scheduler),
            RecipeKey("karras", \.karras),
            RecipeKey("guidance", \.guidance) { v, key in try require(v >= 0 && v <= 100, key, "in 0...100", formatNumber(v)) },
            RecipeKey("seed", \.seed) { v, key in try requireSeed(v, key) },
            RecipeKey("images_per_prompt", \.imagesPerPrompt) { v, key in try require(v, in: 1...16, key) },
            RecipeKey("timestep_spacing", \.timestepSpacing),
        ]
    }
}

extension TrainingRecipe.EMASection: RecipeSection {
    static var keys: [RecipeKey<Self>] {
        [
            RecipeKey("enabled", \.enabled),
            RecipeKey("decay", \.decay) { v, key in try require(v >= 0 && v <= 1, key, "in 0...1", formatNumber(v)) },
            RecipeKey("min_decay", \.minDecay) { v, key in try require(v >= 0 && v <= 1, key, "in 0...1", formatNumber(v)) },
            RecipeKey("update_after_step", \.updateAfterStep) { v, key in try require(v, in: 0...Int.max, key) },
            RecipeKey("use_ema_warmup", \.useEMAWarmup),
            RecipeKey("inv_gamma", \.invGamma) { v, key in try require(v > 0 && v.isFinite, key, "> 0", formatNumber(v)) },
            RecipeKey("power", \.power) { v, key in try require(v > 0 && v.isFinite, key, "> 0", formatNumber(v)) },
            RecipeKey("update_every", \.updateEvery) { v, key in try require(v, in: 1...Int.max, key) },
            RecipeKey("use_for", \.useFor),
        ]
    }
}

// The JSON form of a recipe walks the same tables (a Codable type needs these two members itself).

extension TrainingRecipe {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.DataSection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.PriorSection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.ModelSection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.LoRASection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.OptimSection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.TrainSection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.CheckpointSection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.EMASection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

extension TrainingRecipe.ValidationSection {
    public init(from decoder: any Decoder) throws { try self.init(keysFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeKeys(to: encoder) }
}

// MARK: - Checks used by the tables

/// Throws `outOfRange` unless `ok`.
func require(_ ok: Bool, _ key: String, _ requirement: String, _ got: @autoclosure () -> String) throws {
    if !ok { throw RecipeError.outOfRange(key: key, requirement: requirement, got: got()) }
}

func require(_ x: Int, in range: ClosedRange<Int>, _ key: String) throws {
    let requirement = range.upperBound == Int.max ? ">= \(range.lowerBound)" : "in \(range.lowerBound)...\(range.upperBound)"
    try require(range.contains(x), key, requirement, "\(x)")
}

/// Seeds are TOML integers, so at most `Int64.max`.
func requireSeed(_ x: UInt64, _ key: String) throws {
    try require(x <= TrainingRecipe.maxSeed, key, "<= \(TrainingRecipe.maxSeed)", "\(x)")
}

/// A prompt template whose `{...}` placeholders are all in `allowed`.
func requireTemplate(_ s: String, _ key: String, allowed: Set<String>) throws {
    for name in placeholders(in: s) where !allowed.contains(name) {
        throw RecipeError.conflict(key: key, reason: "unknown placeholder {\(name)} in \"\(s)\"; use "
            + allowed.sorted().map { "{\($0)}" }.joined(separator: " and "))
    }
}

/// Names inside `{...}` in a prompt template.
private func placeholders(in s: String) -> [String] {
    var names: [String] = []
    var rest = s[...]
    while let open = rest.firstIndex(of: "{") {
        let after = rest[rest.index(after: open)...]
        guard let close = after.firstIndex(of: "}") else { break }
        names.append(String(after[..<close]))
        rest = after[after.index(after: close)...]
    }
    return names
}
