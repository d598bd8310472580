import Foundation

/// Recipe keys a command line may override; nil leaves the recipe's value.
public struct RecipeOverrides: Sendable, Equatable {
    /// `--resolution` → `data.resolution`.
    public var resolution: Int?
    /// `--max-steps` → `train.max_steps`.
    public var maxSteps: Int?
    /// `--learning-rate` → `optim.learning_rate`.
    public var learningRate: Double?
    /// `--rank` → `model.lora.rank` (LoRA recipes only).
    public var rank: Int?
    /// `--seed` → `train.seed`.
    public var seed: UInt64?

    public init(resolution: Int? = nil, maxSteps: Int? = nil, learningRate: Double? = nil, rank: Int? = nil,
                seed: UInt64? = nil) {
        self.resolution = resolution
        self.maxSteps = maxSteps
        self.learningRate = learningRate
        self.rank = rank
        self.seed = seed
    }

    /// The flag that set `key`, if one did.
    func flag(setting key: String) -> String? {
        let overrides: [(flag: String, key: String, given: Bool)] = [
            ("--resolution", "data.resolution", resolution != nil),
            ("--max-steps", "train.max_steps", maxSteps != nil),
            ("--learning-rate", "optim.learning_rate", learningRate != nil),
            ("--rank", "model.lora.rank", rank != nil),
            ("--seed", "train.seed", seed != nil),
        ]
        return overrides.first { $0.key == key && $0.given }?.flag
    }
}

extension TrainingRecipe {
    /// This recipe with the command-line values in place, validated as a recipe file is.
    /// An error caused by a flag names the flag and the key (`--learning-rate: optim.learning_rate must be > 0 ...`).
    public func applying(_ o: RecipeOverrides) throws -> TrainingRecipe {
        var r = self
        if let v = o.resolution { r.data.resolution = v }
        if let v = o.maxSteps { r.train.maxSteps = v }
        if let v = o.learningRate { r.optim.learningRate = v }
        if let v = o.rank {
            guard r.model.train == .lora else {
                throw RecipeError.override(flag: "--rank", .conflict(
                    key: "model.lora.rank", reason: "applies to LoRA recipes; this recipe has model.train = \"full\""))
            }
            r.model.lora.rank = v
        }
        if let v = o.seed { r.train.seed = v }
        do {
            try r.validate()
        } catch let e as RecipeError {
            if let key = e.key, let flag = o.flag(setting: key) {
                throw RecipeError.override(flag: flag, e)
            }
            throw e
        }
        return r
    }
}
