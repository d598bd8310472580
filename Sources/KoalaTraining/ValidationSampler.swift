import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

/// A validation prompt (templates filled in) with its text conditioning.
public struct ValidationPrompt {
    public var prompt: String
    /// nil: no negative prompt, as `generate` without `--negative-prompt`.
    public var negativePrompt: String?
    /// One row.
    public var conditional: PromptEmbeddings
    /// One row: the encoded negative prompt, or zeros when there is none and the model
    /// forces zeros for it.
    public var unconditional: PromptEmbeddings

    public init(prompt: String, negativePrompt: String?, conditional: PromptEmbeddings, unconditional: PromptEmbeddings) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.conditional = conditional
        self.unconditional = unconditional
    }

    /// Encodes prompts with `encode` (one text per row, as `StableDiffusionXLPipeline.encodePrompt`),
    /// the unconditional input as `encodeNegativePrompt` does. Pass trained text encoders'
    /// `encode` to draw with them.
    public static func encode(_ prompts: [String], negativePrompt: String?, forceZerosForEmptyPrompt: Bool,
                              with encode: ([String]) -> PromptEmbeddings) -> [ValidationPrompt] {
        guard !prompts.isEmpty else { return [] }
        // One prompt per call, as `generate` encodes it: the same numbers, not just close ones.
        let conds = prompts.map { encode([$0]) }
        let uncond: PromptEmbeddings
        if negativePrompt == nil && forceZerosForEmptyPrompt {
            uncond = PromptEmbeddings(hiddenStates: Tensor.zeros(conds[0].hiddenStates.shape), pooled: Tensor.zeros(conds[0].pooled.shape))
        } else {
            uncond = encode([negativePrompt ?? ""])
        }
        return zip(prompts, conds).map { ValidationPrompt(prompt: $0, negativePrompt: negativePrompt, conditional: $1, unconditional: uncond) }
    }
}

/// The `[validation]` prompts of a recipe with a subject's `{token}`/`{class}` filled in.
public struct ValidationTexts: Sendable, Equatable {
    public var prompts: [String]
    public var negativePrompt: String?

    public init(prompts: [String], negativePrompt: String? = nil) {
        self.prompts = prompts
        self.negativePrompt = negativePrompt
    }

    public init(_ v: TrainingRecipe.ValidationSection, token: String, className: String) {
        prompts = v.prompts(token: token, className: className)
        negativePrompt = v.negativePrompt.map { TrainingRecipe.fill($0, token: token, className: className) }
    }
}

/// One validation image.
public struct ValidationImage {
    /// Optimizer steps done when it was drawn.
    public let step: Int
    /// Index into `validation.prompts` (0-based).
    public let promptIndex: Int
    /// Index among the prompt's `images_per_prompt` images (0-based).
    public let imageIndex: Int
    /// Everything `generate` would need to draw it again from the checkpoint of `step`
    /// (`count` is `images_per_prompt`; this image is number `imageIndex + 1`).
    public let parameters: GenerationParameters
    /// The scheduler config it was drawn with (the model's, with `parameters` applied).
    public let schedulerConfig: SchedulerConfig
    /// Planar RGB [3, height, width] in about [-1, 1] (`RGBImage(planarFloats:)`).
    public let pixels: [Float]

    public var width: Int { parameters.width! }
    public var height: Int { parameters.height! }

    /// `step000015-p1-1.png`: step, prompt number, image number.
    public var fileName: String { Self.fileName(step: step, promptIndex: promptIndex, imageIndex: imageIndex) }

    public static func fileName(step: Int, promptIndex: Int, imageIndex: Int) -> String {
        CheckpointName(step: step).validationImage(promptIndex: promptIndex, imageIndex: imageIndex)
    }
}

/// Draws a recipe's validation images with a U-Net as it is at some point of training.
///
/// Training releases the text encoders (~800M parameters for KOALA-700M, ~3.3 GB in
/// float32) and the VAE encoder once the photos and prompts are cached, so the sampler
/// keeps only what drawing needs: the prompts' embeddings, encoded once at the start,
/// and the VAE's decoder (~50M parameters). Trained text encoders would change the
/// embeddings: pass fresh ones to `draw`.
public final class ValidationSampler {
    public let settings: TrainingRecipe.ValidationSection
    /// Image side in pixels (`data.resolution`).
    public let resolution: Int
    /// Draws the starting noise (`train.rng`).
    public let rng: RNGKind
    public let schedulerConfig: SchedulerConfig
    public let decoder: LatentDecoder
    /// The prompts with their embeddings, encoded by the base model's text encoders.
    public let prompts: [ValidationPrompt]
    /// The model's `force_zeros_for_empty_prompt`, for re-encoding `prompts`.
    public let forceZerosForEmptyPrompt: Bool

    /// Encodes `texts` with `pipeline`'s text encoders and keeps its VAE decoder.
    public init(recipe: TrainingRecipe, texts: ValidationTexts, pipeline: StableDiffusionXLPipeline) throws {
        settings = recipe.validation
        resolution = recipe.data.resolution
        rng = recipe.train.rng
        schedulerConfig = pipeline.schedulerConfig
        decoder = LatentDecoder(pipeline.vae)
        // The size checks of `generate`, so a bad resolution fails before training starts.
        _ = try pipeline.latentShape(width: resolution, height: resolution, count: recipe.validation.imagesPerPrompt)
        forceZerosForEmptyPrompt = pipeline.forceZerosForEmptyPrompt
        prompts = ValidationPrompt.encode(texts.prompts, negativePrompt: texts.negativePrompt,
                                          forceZerosForEmptyPrompt: pipeline.forceZerosForEmptyPrompt, with: pipeline.encodePrompt)
    }

    /// Whether validation images are due after `step` of `totalSteps` optimizer steps:
    /// every `validation.every` steps and at the end.
    public func isDue(step: Int, totalSteps: Int) -> Bool {
        !prompts.isEmpty && (step == totalSteps || (settings.every > 0 && step % settings.every == 0))
    }

    /// The file names (`ValidationImage.fileName`) of the images `draw` hands over at `step`.
    public func fileNames(step: Int) -> [String] {
        prompts.indices.flatMap { i in
            (0..<settings.imagesPerPrompt).map { ValidationImage.fileName(step: step, promptIndex: i, imageIndex: $0) }
        }
    }

    /// The generation parameters of prompt `index` (what `generate` takes to draw it).
    public func parameters(_ prompt: ValidationPrompt) -> GenerationParameters {
        var p = GenerationParameters(prompt: prompt.prompt)
        p.negativePrompt = prompt.negativePrompt
        p.steps = settings.steps
        p.guidance = Float(settings.guidance)
        p.scheduler = settings.scheduler
        p.karras = settings.karras
        p.timestepSpacing = settings.timestepSpacing
        p.seed = settings.seed
        p.width = resolution
        p.height = resolution
        p.count = settings.imagesPerPrompt
        p.rng = rng
        p.vaeTiling = .off  // `LatentDecoder` decodes whole; `generate` with these parameters does too
        return p
    }

    /// Draws every prompt's images with `unet` as it is (the caller switches adapter
    /// dropout off) and hands each to `body`. Every validation starts from the same
    /// noise (`validation.seed`), so images of different steps are comparable, and
    /// `koalabooth generate` with the same parameters and the checkpoint of `step`
    /// draws the same image.
    ///
    /// - Parameter prompts: embeddings to use instead of the cached ones (from trained
    ///   text encoders); same order as `self.prompts`.
    public func draw(unet: UNet2DConditionModel, step: Int, prompts: [ValidationPrompt]? = nil,
                     _ body: (ValidationImage) throws -> Void) throws {
        let prompts = prompts ?? self.prompts
        let latentSide = resolution / decoder.scaleFactor
        let count = settings.imagesPerPrompt
        let n = 3 * resolution * resolution
        for (i, prompt) in prompts.enumerated() {
            let p = parameters(prompt)
            let shape = [count, unet.config.inChannels, latentSide, latentSide]
            let noise: Tensor
            switch rng {
            case .torch: var g = TorchGenerator(seed: p.seed); noise = g.randn(shape)
            case .native: var g = RandomGenerator(seed: p.seed); noise = g.randn(shape)
            }
            let config = p.schedulerConfig(schedulerConfig)
            var scheduler = try p.scheduler.make(config: config)
            try scheduler.setTimesteps(p.steps)
            let latents = try denoiseLatents(unet: unet, scheduler: &scheduler, conditional: prompt.conditional.repeated(count),
                                         unconditional: prompt.unconditional.repeated(count), guidance: p.guidance,
                                         noise: noise, width: resolution, height: resolution)
            let images = decoder.decode(latents).contiguous()
            for k in 0..<count {
                let pixels = Array(UnsafeBufferPointer(start: images.data + k * n, count: n))
                try body(ValidationImage(step: step, promptIndex: i, imageIndex: k, parameters: p, schedulerConfig: config, pixels: pixels))
            }
        }
    }
}
