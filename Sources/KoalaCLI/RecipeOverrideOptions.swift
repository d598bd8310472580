import ArgumentParser
import KoalaTraining

/// `train`'s flags that override recipe keys (`RecipeOverrides`).
struct RecipeOverrideOptions: ParsableArguments {
    @Option(help: "Override data.resolution (pixels).") var resolution: Int?
    @Option(help: "Override train.max_steps.") var maxSteps: Int?
    @Option(help: "Override optim.learning_rate.") var learningRate: Double?
    @Option(help: "Override model.lora.rank.") var rank: Int?
    @Option(help: "Override train.seed.") var seed: UInt64?

    var overrides: RecipeOverrides {
        RecipeOverrides(resolution: resolution, maxSteps: maxSteps, learningRate: learningRate, rank: rank, seed: seed)
    }

    /// The flag that overrides a recipe key.
    static func flag(overriding key: String) -> String {
        switch key {
        case "data.resolution": "--resolution"
        case "train.max_steps": "--max-steps"
        case "optim.learning_rate": "--learning-rate"
        case "model.lora.rank": "--rank"
        case "train.seed": "--seed"
        default: key
        }
    }
}
