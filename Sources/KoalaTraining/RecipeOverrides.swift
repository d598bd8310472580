import Foundation

/// Recipe keys a run may override (the CLI's flags, the service's request fields); nil
/// leaves the recipe's value.
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

    /// Whether this override set `key`.
    func sets(_ key: String) -> Bool {
        switch key {
        case "data.resolution": resolution != nil
        case "train.max_steps": maxSteps != nil
        case "optim.learning_rate": learningRate != nil
        case "model.lora.rank": rank != nil
        case "train.seed": seed != nil
        default: false
        }
    }
}

extension TrainingRecipe {
    /// This recipe with the overrides in place, validated as a recipe file is. An error
    /// caused by an override is `RecipeError.override(key:)`, so a caller can name the
    /// option that gave it (`--learning-rate: optim.learning_rate must be > 0 ...`).
    public func applying(_ o: RecipeOverrides) throws -> TrainingRecipe {
        var r = self
        if let v = o.resolution { r.data.resolution = v }
        if let v = o.maxSteps { r.train.maxSteps = v }
        if let v = o.learningRate { r.optim.learningRate = v }
        if let v = o.rank {
            guard r.model.train == .lora else {
                throw RecipeError.override(key: "model.lora.rank", .conflict(
                    key: "model.lora.rank", reason: "applies to LoRA recipes; this recipe has model.train = \"full\""))
            }
            r.model.lora.rank = v
        }
        if let v = o.seed { r.train.seed = v }
        do {
            try r.validate()
        } catch let e as RecipeError {
            if let key = e.key, o.sets(key) { throw RecipeError.override(key: key, e) }
            throw e
        }
        return r
    }
}
