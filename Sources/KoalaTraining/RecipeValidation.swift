import Foundation

extension TrainingRecipe {
    /// The largest seed a TOML integer can hold.
    public static let maxSeed = UInt64(Int64.max)
    /// The most training timesteps `train.min_timestep`/`max_timestep` may name (SDXL
    /// models have 1000; the trainer checks the model's own count).
    public static let maxTimesteps = 1000

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
        if let high = train.maxTimestep, train.minTimestep >= high {
            throw RecipeError.conflict(key: "train.min_timestep",
                                       reason: "timesteps are drawn from min_timestep..<max_timestep, so min_timestep = \(train.minTimestep) "
                                           + "must be below train.max_timestep = \(high); lower min_timestep or raise max_timestep")
        }
        if ema.minDecay > ema.decay {
            throw RecipeError.conflict(key: "ema.min_decay",
                                       reason: "min_decay = \(formatNumber(ema.minDecay)) exceeds ema.decay = \(formatNumber(ema.decay)); "
                                           + "the decay is clamped to min_decay...decay, so lower min_decay")
        }
        if validation.every > 0 && validation.prompts.isEmpty {
            throw RecipeError.conflict(key: "validation.every",
                                       reason: "validation every \(validation.every) steps needs at least one prompt in validation.prompts")
        }
    }
}
