import Foundation
import KoalaTensor
import TOMLKit

/// A distillation recipe (`koalabooth distill --recipe`): the `[distill]` table — what
/// the student matches of the teacher and how strongly — and the tables a DreamBooth
/// recipe has, read by `TrainingRecipe`'s own reader and rules: `[data]` (only
/// `resolution`: captions come with the images), `[model]` (gradient_checkpointing,
/// precision; the whole student is trained), `[optim]`, `[train]`, `[checkpoint]`,
/// `[ema]`, `[validation]` (drawn with the student; there is no subject, so its prompts
/// take no `{token}`/`{class}`). There are no class images: `[prior]` is refused rather
/// than ignored. Every key is in recipes/README.md.
public struct DistillationRecipe: Sendable, Equatable {
    /// `[distill]`.
    public var distill = DistillSection()
    /// Every other table.
    public var training = TrainingRecipe()

    public init() { training.model.train = .full }

    /// `[distill]` keys.
    public struct DistillSection: Sendable, Equatable {
        /// `self-attention` (KOALA) or `last-feature` (BK-SDM).
        public var features = DistillationFeatureMode.selfAttention
        /// Which teacher transformer block each student block matches (`self-attention` only).
        public var mapping = DistillationLayerMapping.saBottom
        /// Weight of L_task (MSE to the noise or v target).
        public var taskWeight = 1.0
        /// Weight of L_outKD (MSE to the teacher's prediction).
        public var outputWeight = 1.0
        /// Weight of L_featKD (summed feature MSEs).
        public var featureWeight = 1.0

        public init() {}

        enum Key: String, CaseIterable {
            case features, mapping
            case taskWeight = "task_weight"
            case outputWeight = "output_weight"
            case featureWeight = "feature_weight"
        }

        public var weights: DistillationLossWeights {
            DistillationLossWeights(task: Float(taskWeight), output: Float(outputWeight), feature: Float(featureWeight))
        }
    }

    /// Parses and validates a distillation recipe; `source` names it in syntax errors.
    public static func parse(toml text: String, source: String = "recipe") throws -> DistillationRecipe {
        let root = try parseRecipeTOML(text, source: source)
        var r = DistillationRecipe()
        if root["prior"] != nil {
            throw RecipeError.conflict(key: "prior", reason: "distillation has no class images (prior preservation is DreamBooth's); remove the [prior] table")
        }
        if let m = root["model"]?.table, let train = m["train"] {
            guard train.string == "full" else {
                throw RecipeError.conflict(key: "model.train", reason: "distillation trains the whole student U-Net; remove the key or set it to \"full\"")
            }
        }
        if let m = root["model"]?.table, m["lora"] != nil {
            throw RecipeError.conflict(key: "model.lora", reason: "distillation trains the whole student U-Net, not LoRA adapters; remove [model.lora]")
        }
        if let d = root["data"]?.table, let other = d.keys.sorted().first(where: { $0 != "resolution" }) {
            throw RecipeError.unknownKey(key: "data.\(other)", allowed: ["resolution"], suggestion: nil)
        }
        // The other tables go through TrainingRecipe's reader: the same keys, types,
        // ranges and messages as a DreamBooth recipe.
        let rest = TOMLTable()
        for key in root.keys where key != "distill" { rest[key] = root[key] }
        if let m = root["model"]?.table {
            let model = TOMLTable()
            for key in m.keys { model[key] = m[key] }
            model["train"] = String("full")
            rest["model"] = model
        } else {
            rest["model"] = TOMLTable(["train": String("full")])
        }
        r.training = try TrainingRecipe.parse(toml: rest.convert(to: .toml), source: source)
        let t = r.training.train
        if let key = [("min_timestep", t.minTimestep != 0), ("max_timestep", t.maxTimestep != nil),
                      ("debiased_estimation", t.debiasedEstimation)].first(where: \.1)?.0 {
            throw RecipeError.conflict(key: "train.\(key)", reason: "distillation draws every timestep with unweighted losses; remove the key")
        }
        let v = r.training.validation
        for (key, text) in v.prompts.map({ ("validation.prompts", $0) }) + (v.negativePrompt.map { [("validation.negative_prompt", $0)] } ?? [])
        where text.contains("{token}") || text.contains("{class}") {
            throw RecipeError.conflict(key: key, reason: "distillation has no subject to fill {token} or {class} in \"\(text)\"; write the prompt out")
        }

        if let v = root["distill"] {
            guard let t = v.table else {
                throw RecipeError.wrongType(key: "distill", expected: "a table ([distill])", got: "\(v.type)")
            }
            try r.distill.read(t)
        }
        try r.validate()
        return r
    }

    /// Reads, parses and validates the recipe file at `path`; errors name the file.
    public static func load(path: String) throws -> DistillationRecipe {
        try loadRecipeFile(path) { try parse(toml: $0, source: path) }
    }

    /// The `[distill]` ranges.
    public func validate() throws {
        for (key, w) in [("task_weight", distill.taskWeight), ("output_weight", distill.outputWeight),
                         ("feature_weight", distill.featureWeight)] {
            guard w >= 0, w <= 1000 else {
                throw RecipeError.outOfRange(key: "distill.\(key)", requirement: "in 0...1000", got: "\(w)")
            }
        }
        if distill.taskWeight == 0, distill.outputWeight == 0, distill.featureWeight == 0 {
            throw RecipeError.conflict(key: "distill.task_weight", reason: "all three loss weights are 0, so nothing would be learned; set at least one above 0")
        }
    }
}

extension DistillationRecipe.DistillSection {
    fileprivate mutating func read(_ t: TOMLTable) throws {
        let allowed = Key.allCases.map(\.rawValue)
        for k in t.keys.sorted() where Key(rawValue: k) == nil {
            throw RecipeError.unknownKey(key: "distill.\(k)", allowed: allowed, suggestion: nil)
        }
        func choice<E: RawRepresentable & CaseIterable>(_ k: Key, _: E.Type) throws -> E? where E.RawValue == String {
            guard let v = t[k.rawValue] else { return nil }
            guard let s = v.string else {
                throw RecipeError.wrongType(key: "distill.\(k.rawValue)", expected: "a string", got: "\(v.type)")
            }
            guard let e = E(rawValue: s) else {
                throw RecipeError.notOneOf(key: "distill.\(k.rawValue)", allowed: E.allCases.map(\.rawValue), got: "\"\(s)\"")
            }
            return e
        }
        func number(_ k: Key) throws -> Double? {
            guard let v = t[k.rawValue] else { return nil }
            if let d = v.double, d.isFinite { return d }
            if let i = v.int { return Double(i) }
            throw RecipeError.wrongType(key: "distill.\(k.rawValue)", expected: "a finite number", got: "\(v.type)")
        }
        if let v = try choice(.features, DistillationFeatureMode.self) { features = v }
        if let v = try choice(.mapping, DistillationLayerMapping.self) { mapping = v }
        if let v = try number(.taskWeight) { taskWeight = v }
        if let v = try number(.outputWeight) { outputWeight = v }
        if let v = try number(.featureWeight) { featureWeight = v }
    }
}
