import Foundation

extension TrainingRecipe {
    /// The largest seed a TOML integer can hold.
    public static let maxSeed = UInt64(Int64.max)

    /// Checks every range and cross-key rule of `recipes/README.md`; the error names the key.
    /// Each key's own range is in its row of RecipeKeys.swift; the rules here involve several keys.
    public func validate() throws {
        try checkInside("")

        // Rules across keys.
        if optim.warmupSteps > train.maxSteps {
            throw RecipeError.conflict(key: "optim.warmup_steps",
                                       reason: "\(optim.warmupSteps) warmup steps exceed train.max_steps = \(train.maxSteps)")
        }
        if optim.warmupSteps > 0 && optim.lrScheduler == .constant {
            throw RecipeError.conflict(key: "optim.warmup_steps",
                                       reason: "the \"constant\" schedule has no warmup (as diffusers' get_scheduler); "
                                           + "set optim.lr_scheduler = \"constant_with_warmup\" or remove warmup_steps")
        }
        if model.train == .full && checkpoint.format != .diffusers {
            throw RecipeError.conflict(key: "checkpoint.format",
                                       reason: "\"\(checkpoint.format.rawValue)\" applies to LoRA runs; a full fine-tune "
                                           + "is saved as a diffusers unet/ folder, so use \"diffusers\"")
        }
        if validation.karras && validation.scheduler == .ddim {
            throw RecipeError.conflict(key: "validation.karras",
                                       reason: "Karras sigmas do not apply to ddim; use dpm-solver++ or euler, or karras = false")
        }
        if validation.every > 0 && validation.prompts.isEmpty {
            throw RecipeError.conflict(key: "validation.every",
                                       reason: "validation every \(validation.every) steps needs at least one prompt in validation.prompts")
        }
    }
}
