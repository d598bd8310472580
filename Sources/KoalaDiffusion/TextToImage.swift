import Foundation
import KoalaModels
import KoalaTensor

/// Which random source draws the initial latents.
public enum RNGKind: String, Sendable, CaseIterable {
    /// PyTorch's CPU generator: `--seed S` gives the latents a diffusers script draws with
    /// `generator=torch.Generator().manual_seed(S)`.
    case torch
    /// KoalaBooth's own generator (not comparable with PyTorch).
    case native
}

/// Everything that decides a text-to-image result, besides the model and any given latents.
public struct GenerationParameters: Sendable, Equatable {
    public var prompt: String
    /// nil: no negative prompt (zeros when the model sets `force_zeros_for_empty_prompt`,
    /// as diffusers does for `negative_prompt=None`); "" is encoded as the empty text.
    public var negativePrompt: String?
    public var steps = 25
    /// Classifier-free guidance scale; guidance is off at 1 or below (as diffusers).
    public var guidance: Float = 7.5
    /// diffusers' `guidance_rescale` (arXiv 2305.08891 §3.4); 0 disables it.
    public var guidanceRescale: Float = 0
    public var scheduler = SchedulerKind.dpmSolverPlusPlus
    /// Karras sigmas (`use_karras_sigmas`).
    public var karras = false
    /// `timestep_spacing` to draw with; nil keeps the model folder's scheduler config
    /// (KOALA-Lightning samples with `trailing` while its folder says `leading`).
    public var timestepSpacing: TimestepSpacing?
    public var seed: UInt64 = 0
    /// Pixel size; nil takes the U-Net's `sample_size` × the VAE factor.
    public var width: Int?
    public var height: Int?
    /// Images per prompt (diffusers' `num_images_per_prompt`).
    public var count = 1
    public var rng = RNGKind.torch
    /// Whether the VAE decodes in tiles; `auto` only where decoding whole would not fit in
    /// the memory available, so ordinary sizes match diffusers' untiled default.
    public var vaeTiling = VAETiling.auto

    public init(prompt: String) { self.prompt = prompt }

    /// The scheduler config these parameters draw with: the model's `base` config with
    /// `karras` and any `timestepSpacing` applied.
    public func schedulerConfig(_ base: SchedulerConfig) -> SchedulerConfig {
        var config = base
        config.useKarrasSigmas = karras
        if let timestepSpacing { config.timestepSpacing = timestepSpacing }
        return config
    }
}

/// Progress after each denoising step.
public struct GenerationProgress: Sendable {
    /// Steps done (1-based).
    public let step: Int
    public let total: Int
    /// Seconds since denoising started.
    public let elapsed: Double
}

/// The output of `StableDiffusionXLPipeline.generate`.
public struct GenerationResult {
    /// Final denoised latents [count, 4, h, w] (before the VAE's scaling is undone).
    public let latents: Tensor
    /// Decoded images [count, 3, H, W] in about [-1, 1].
    public let images: Tensor
    public let width: Int
    public let height: Int
}

/// Text conditioning for the U-Net: penultimate hidden states of both encoders
/// concatenated [B, 77, D1+D2], and text_encoder_2's projected pooled output [B, P].
public struct PromptEmbeddings {
    public let hiddenStates: Tensor
    public let pooled: Tensor

    public init(hiddenStates: Tensor, pooled: Tensor) {
        self.hiddenStates = hiddenStates
        self.pooled = pooled
    }

    /// Each row repeated `n` times in place (diffusers' `repeat(1, n, 1).view(B·n, …)`).
    public func repeated(_ n: Int) -> PromptEmbeddings {
        guard n > 1 else { return self }
        func rep(_ t: Tensor) -> Tensor {
            let rows = t.chunk(t.shape[0], dim: 0)
            return Tensor.cat(rows.flatMap { Array(repeating: $0, count: n) }, dim: 0)
        }
        return PromptEmbeddings(hiddenStates: rep(hiddenStates), pooled: rep(pooled))
    }
}

/// A problem with generation inputs, phrased for the user.
public struct GenerationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension StableDiffusionXLPipeline {
    /// Pixels per latent cell: 2^(VAE blocks − 1), 8 for SDXL.
    public var vaeScaleFactor: Int { 1 << (vae.config.blockOutChannels.count - 1) }

    /// The default image side: the U-Net's `sample_size` × `vaeScaleFactor` (SDXL: 1024).
    public var defaultSize: (width: Int, height: Int) {
        switch unet.config.sampleSize {
        case .one(let s): return (s * vaeScaleFactor, s * vaeScaleFactor)
        case .many(let s) where s.count == 2: return (s[1] * vaeScaleFactor, s[0] * vaeScaleFactor)
        default: return (1024, 1024)
        }
    }

    /// Encodes `texts` as diffusers' `encode_prompt` does for one prompt per row:
    /// `hidden_states[-2]` of each encoder concatenated on the feature axis, and
    /// text_encoder_2's `text_embeds` as the pooled embedding.
    public func encodePrompt(_ texts: [String]) -> PromptEmbeddings {
        noGrad {
            let out1 = textEncoder(texts.map(tokenizer.tokenize))
            let out2 = textEncoder2(texts.map(tokenizer2.tokenize))
            guard let pooled = out2.textEmbeds else {
                preconditionFailure("text_encoder_2 must be a CLIPTextModelWithProjection")
            }
            let h1 = out1.hiddenStates[out1.hiddenStates.count - 2]
            let h2 = out2.hiddenStates[out2.hiddenStates.count - 2]
            return PromptEmbeddings(hiddenStates: Tensor.cat([h1, h2], dim: 2), pooled: pooled)
        }
    }

    /// The unconditional embeddings for classifier-free guidance: zeros shaped like
    /// `cond` when there is no negative prompt and the model forces zeros for it,
    /// otherwise the encoded negative prompt ("" when none).
    public func encodeNegativePrompt(_ negative: String?, like cond: PromptEmbeddings) -> PromptEmbeddings {
        if negative == nil && forceZerosForEmptyPrompt {
            return PromptEmbeddings(hiddenStates: Tensor.zeros(cond.hiddenStates.shape), pooled: Tensor.zeros(cond.pooled.shape))
        }
        return encodePrompt(Array(repeating: negative ?? "", count: cond.hiddenStates.shape[0]))
    }

    /// SDXL micro-conditioning `add_time_ids` for `batch` rows: original size (h, w),
    /// crop top-left (0, 0), target size (h, w).
    public func addTimeIds(width: Int, height: Int, batch: Int) -> Tensor {
        sdxlTimeIds(width: width, height: height, batch: batch)
    }

    /// Checks the size and returns the latent shape [count, C, H/f, W/f].
    public func latentShape(width: Int, height: Int, count: Int) throws -> [Int] {
        guard width > 0, height > 0, width % 8 == 0, height % 8 == 0 else {
            throw GenerationError("width and height must be positive multiples of 8, got \(width)x\(height); for example \(max(8, width / 8 * 8))x\(max(8, height / 8 * 8))")
        }
        let multiple = sizeMultiple
        guard width % multiple == 0, height % multiple == 0 else {
            throw GenerationError("this model needs width and height that are multiples of \(multiple), got \(width)x\(height); for example \(max(multiple, width / multiple * multiple))x\(max(multiple, height / multiple * multiple))")
        }
        guard count >= 1 else { throw GenerationError("the image count must be at least 1, got \(count)") }
        return [count, unet.config.inChannels, height / vaeScaleFactor, width / vaeScaleFactor]
    }

    /// Unscaled standard-normal starting latents for `p`, drawn in one call for the whole
    /// batch (as diffusers with one generator).
    public func initialNoise(_ p: GenerationParameters) throws -> Tensor {
        let size = (width: p.width ?? defaultSize.width, height: p.height ?? defaultSize.height)
        let shape = try latentShape(width: size.width, height: size.height, count: p.count)
        switch p.rng {
        case .torch:
            var g = TorchGenerator(seed: p.seed)
            return g.randn(shape)
        case .native:
            var g = RandomGenerator(seed: p.seed)
            return g.randn(shape)
        }
    }

    /// The scheduler `p` asks for, configured from the model's scheduler config.
    public func makeScheduler(_ p: GenerationParameters) throws -> any Scheduler {
        var s = try p.scheduler.make(config: p.schedulerConfig(schedulerConfig))
        try s.setTimesteps(p.steps)
        return s
    }

    /// Text-to-image as diffusers' `StableDiffusionXLPipeline.__call__`: encodes the
    /// prompts, denoises `noise` (unscaled standard normal [count, 4, h, w]; drawn from
    /// `p.seed` with `p.rng` when nil) over `p.steps` scheduler steps with batched
    /// classifier-free guidance, and decodes the final latents with the VAE, whole or in
    /// tiles as `p.vaeTiling` says (`auto` weighs the batch against the memory available
    /// now).
    public func generate(_ p: GenerationParameters, noise: Tensor? = nil,
                         progress: (GenerationProgress) -> Void = { _ in }) throws -> GenerationResult {
        let (width, height, shape) = try request(p, noise: noise)
        let tiled = decodesTiled(for: p, width: width, height: height, images: p.count)
        var scheduler = try makeScheduler(p)
        return try noGrad {
            let cond = encodePrompt([p.prompt])
            let uncond = p.guidance > 1 ? encodeNegativePrompt(p.negativePrompt, like: cond).repeated(p.count) : nil
            let latents = try denoiseLatents(unet: unet, scheduler: &scheduler, conditional: cond.repeated(p.count), unconditional: uncond,
                                         guidance: p.guidance, guidanceRescale: p.guidanceRescale, noise: try noise ?? initialNoise(p),
                                         width: width, height: height, progress: progress)
            return GenerationResult(latents: latents, images: decodeLatents(latents, tiled: tiled), width: width, height: height)
        }
    }

    /// `decodesTiled` for `p`, with the memory available now when it is `auto` (a caller
    /// that ran `checkRequest` passes its answer, `on` or `off`, in `p.vaeTiling`).
    private func decodesTiled(for p: GenerationParameters, width: Int, height: Int, images: Int) -> Bool {
        decodesTiled(p.vaeTiling, width: width, height: height, guidance: p.guidance, images: images,
                     available: p.vaeTiling == .auto ? SystemMemory.availableBytes() : nil)
    }

    /// The pixel size `p` asks for and its latent shape, checked against given `noise`.
    private func request(_ p: GenerationParameters, noise: Tensor?) throws -> (width: Int, height: Int, shape: [Int]) {
        let width = p.width ?? defaultSize.width, height = p.height ?? defaultSize.height
        let shape = try latentShape(width: width, height: height, count: p.count)
        if let noise, noise.shape != shape {
            throw GenerationError("the initial latents are \(noise.shape.map(String.init).joined(separator: "x")) but a \(width)x\(height) image (count \(p.count)) needs \(shape.map(String.init).joined(separator: "x"))")
        }
        return (width, height, shape)
    }

    /// `generate` one image at a time, for any count: each image is denoised, decoded and
    /// handed to `body` (index from 0, final latents [1, 4, h, w], image [1, 3, H, W])
    /// before the next one starts, so memory does not grow with `p.count`. The starting
    /// noise is `noise`'s row `index`, or the same draws `initialNoise(p)` makes for the
    /// batch (one generator continued from image to image). Each image runs the U-Net alone
    /// rather than in a batch of `p.count`, which changes its result only by rounding, and
    /// is decoded whole or in tiles as `p.vaeTiling` says (`auto` weighs one image against
    /// the memory available now).
    public func generateEach(_ p: GenerationParameters, noise: Tensor? = nil,
                             progress: (_ index: Int, GenerationProgress) -> Void = { _, _ in },
                             _ body: (_ index: Int, _ latents: Tensor, _ image: Tensor) throws -> Void) throws {
        let (width, height, shape) = try request(p, noise: noise)
        let tiled = decodesTiled(for: p, width: width, height: height, images: 1)
        var draws = NoiseDraws(p, shape: shape, given: noise)
        try noGrad {
            let cond = encodePrompt([p.prompt])
            let uncond = p.guidance > 1 ? encodeNegativePrompt(p.negativePrompt, like: cond) : nil
            for index in 0..<p.count {
                var scheduler = try makeScheduler(p)
                let latents = try denoiseLatents(unet: unet, scheduler: &scheduler, conditional: cond, unconditional: uncond,
                                                 guidance: p.guidance, guidanceRescale: p.guidanceRescale, noise: draws.next(),
                                                 width: width, height: height) { progress(index, $0) }
                try body(index, latents, decodeLatents(latents, tiled: tiled))
            }
        }
    }

    /// Undoes the VAE's latent normalisation (`latents_mean`/`latents_std` when the config
    /// has them, else the scaling factor) and decodes to images [B, 3, H, W], in the VAE's
    /// tiles with `tiled` (as diffusers' `enable_vae_tiling()`).
    public func decodeLatents(_ latents: Tensor, tiled: Bool = false) -> Tensor {
        noGrad { vae.decode(unscaleLatents(latents, config: vae.config), tiled: tiled) }
    }
}

/// The starting noise of one image after another, equal to the rows of one batch draw
/// (`initialNoise`). Both generators give a batch's rows as consecutive draws, except
/// PyTorch's for rows whose size is not a multiple of 16 (it redraws a batch's last 16
/// values); those small latents are drawn as one batch and sliced.
struct NoiseDraws {
    private enum Source { case torch(TorchGenerator), native(RandomGenerator), batch(Tensor) }
    private var source: Source
    private let row: [Int]
    private var index = 0

    init(_ p: GenerationParameters, shape: [Int], given: Tensor?) {
        row = [1] + shape.dropFirst()
        let n = row.reduce(1, *)
        if let given {
            source = .batch(given)
        } else {
            switch p.rng {
            case .torch where n >= 16 && n % 16 == 0: source = .torch(TorchGenerator(seed: p.seed))
            case .torch: var g = TorchGenerator(seed: p.seed); source = .batch(g.randn(shape))
            case .native: source = .native(RandomGenerator(seed: p.seed))
            }
        }
    }

    mutating func next() -> Tensor {
        defer { index += 1 }
        switch source {
        case .torch(var g): defer { source = .torch(g) }; return g.randn(row)
        case .native(var g): defer { source = .native(g) }; return g.randn(row)
        case .batch(let t): return t.slice(0, index, index + 1).contiguous()
        }
    }
}

/// diffusers' `rescale_noise_cfg`: scales the guided prediction to the per-sample standard
/// deviation of the text prediction, then mixes by `rescale`.
func rescaleNoiseCFG(_ cfg: Tensor, text: Tensor, rescale: Float) -> Tensor {
    let b = cfg.shape[0]
    let cfg = cfg.contiguous(), text = text.contiguous()
    let n = cfg.count / b
    let out = Tensor(empty: cfg.shape)
    let pc = cfg.data, pt = text.data, po = out.data
    // Unbiased standard deviation, as torch.std.
    func std(_ p: UnsafeMutablePointer<Float>) -> Double {
        var mean = 0.0
        for i in 0..<n { mean += Double(p[i]) }
        mean /= Double(n)
        var ss = 0.0
        for i in 0..<n { let d = Double(p[i]) - mean; ss += d * d }
        return (ss / Double(max(n - 1, 1))).squareRoot()
    }
    for s in 0..<b {
        let ratio = Float(std(pt + s * n) / std(pc + s * n))
        for i in s * n..<(s + 1) * n {
            let rescaled = pc[i] * ratio
            po[i] = rescale * rescaled + (1 - rescale) * pc[i]
        }
    }
    return out
}
