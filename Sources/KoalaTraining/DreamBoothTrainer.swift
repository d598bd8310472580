import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

/// One line of training progress.
public struct TrainingProgress: Sendable {
    /// Optimizer steps done (1-based).
    public let step: Int
    public let totalSteps: Int
    /// This step's loss (mean over its micro-batches).
    public let loss: Double
    /// Exponentially smoothed loss (`train.loss_smoothing`, bias-corrected).
    public let smoothedLoss: Double
    public let learningRate: Double
    /// Mean seconds per optimizer step in this session.
    public let secondsPerStep: Double
    public let etaSeconds: Double
    /// Peak resident set size of the process in bytes (getrusage `ru_maxrss`).
    public let peakRSSBytes: Int
}

/// Files of one saved checkpoint.
public struct TrainingCheckpointFiles: Sendable {
    public let step: Int
    /// The diffusers-format LoRA (nil when the recipe asks for kohya only).
    public let lora: URL?
    /// The kohya-format LoRA, when the recipe asks for it.
    public let kohya: URL?
    /// The diffusers `unet` folder of a full fine-tuning run (then `lora` and `kohya` are nil).
    public var unet: URL? = nil
    public let optimizerState: URL
    /// The EMA state, when the run keeps one (`[ema]`).
    public var ema: URL? = nil
    /// The raw weights, when the exported files hold the EMA ones.
    public var rawWeights: URL? = nil
    /// `TrainingCheckpointState` as JSON.
    public let state: URL

    /// The LoRA file a generator should load: diffusers when written, else kohya.
    public var primaryLoRA: URL { (lora ?? kohya)! }

    /// The file to record in the store: the LoRA file, or the full checkpoint's weights
    /// file inside its `unet` folder.
    public var recordedFile: URL { unet.map { $0.appendingPathComponent(FullUNetWeights.weightsFile) } ?? primaryLoRA }
}

/// The step and randomness position saved beside each checkpoint, for `--resume`.
public struct TrainingCheckpointState: Codable, Sendable, Equatable {
    /// Optimizer steps done.
    public var step: Int
    public var totalSteps: Int
    public var seed: UInt64
    public var rng: String
    /// The generators are replayed from `seed` for `step` steps on resume: the draws of
    /// each step are a fixed sequence, so replaying is exact and needs no engine dump.
    public var rngReplaySteps: Int
    public var smoothedLoss: Double?
    public var smoothingWeight: Double
    public var lastLoss: Double?
    public var elapsedSeconds: Double
    public var loraFile: String?
    public var kohyaFile: String?
    /// The GEMM precision the run computed in (`fp32` or `bf16`); nil in states written before it was recorded.
    public var precision: String? = nil
    /// The diffusers `unet` folder of a full fine-tuning checkpoint.
    public var unetFolder: String? = nil
    /// The EMA state (`[ema]`); nil in runs without one.
    public var emaFile: String? = nil
    /// The weights training continues from, when the exported files hold their EMA; nil
    /// when the exported files are those weights.
    public var rawWeightsFile: String? = nil
    public var optimizerFile: String
}

extension TrainingCheckpointState {
    /// Reads the resume state at `url`, checks that it belongs to a run of this `seed` and
    /// `rng` (its random draws are replayed from them), and loads the checkpoint's weights
    /// and optimizer state beside it. DreamBooth and distillation runs resume through here.
    static func resume(from url: URL, seed: UInt64, rng: String, weights: any TrainedWeights,
                       optimizer: any Optimizer, ema: EMAModel? = nil) throws -> (state: Self, directory: URL) {
        let state = try JSONDecoder().decode(Self.self, from: Data(contentsOf: url))
        guard state.seed == seed, state.rng == rng else {
            throw TrainingError("\(url.path) was saved with seed \(state.seed) (rng \(state.rng)); resume with the recipe and seed the run was started with")
        }
        let dir = url.deletingLastPathComponent()
        try weights.load(state, from: dir)
        if let raw = state.rawWeightsFile { try RawWeights.load(dir.appendingPathComponent(raw), into: weights.parameters) }
        if let ema {
            guard let file = state.emaFile else {
                throw TrainingError("\(url.path) was saved without [ema]; resume it with ema.enabled = false, or start a new run")
            }
            try ema.load(stateDict: OptimizerState.load(from: dir.appendingPathComponent(file).path))
        }
        try optimizer.load(stateDict: OptimizerState.load(from: dir.appendingPathComponent(state.optimizerFile).path))
        return (state, dir)
    }
}

/// Thrown by `train` when `shouldStop` asked it to stop; a checkpoint of `step` was saved.
public struct TrainingInterrupted: Error, CustomStringConvertible {
    public let step: Int
    public var description: String { "training interrupted after step \(step)" }
}

/// A DreamBooth recipe or input this trainer cannot run.
public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// DreamBooth training of an SDXL-family U-Net on cached latents: LoRA adapters
/// (optionally on both text encoders too) or every U-Net weight (`model.train = "full"`).
///
/// `init` takes a loaded pipeline (or loads one from a folder), encodes the photos once
/// with the VAE, and either caches the instance prompt's embeddings or keeps the text
/// encoders with adapters (`TrainingPromptEncoder`); `train` runs the optimizer loop,
/// calling back with progress and after every checkpoint.
public final class DreamBoothTrainer {
    public let recipe: TrainingRecipe
    public let unet: UNet2DConditionModel
    /// The U-Net's adapters; nil when the whole U-Net is trained.
    public let lora: LoRANetwork?
    /// What the optimizer updates and checkpoints save.
    public let weights: any TrainedWeights
    /// The prompts' conditioning, cached or encoded each step through trained encoders.
    public let prompts: TrainingPromptEncoder
    public let instancePrompt: String
    public let noiseSchedule: NoiseSchedule
    public let predictionType: PredictionType
    /// The photos' cached latents, micro-conditioning and buckets.
    let instance: EncodedExamples
    /// Class images and prompt when `prior.enabled`.
    let prior: PriorPreservation?
    /// Notes about recipe keys this trainer approximates (shown to the user).
    public private(set) var notes: [String] = []
    /// Draws the `[validation]` images; nil without validation prompts.
    public private(set) var validator: ValidationSampler?
    /// The EMA of the trained weights, from the start of `train` with `[ema]` enabled.
    public private(set) var ema: EMAModel?
    /// Called with each micro-batch's timesteps as they are drawn (for tests).
    var timestepsDrawn: ([Int]) -> Void = { _ in }

    /// Loads the diffusers folder at `modelPath` and trains it: `init(recipe:pipeline:…)`
    /// with the folder's pipeline and its `unet/config.json`, which is released (but for
    /// what training keeps) when this returns.
    public convenience init(recipe: TrainingRecipe, modelPath: String, images: [TrainingImage], instancePrompt: String,
                            classImages: ClassImageRequest? = nil, validation: ValidationTexts? = nil) throws {
        let pipeline = try StableDiffusionXLPipeline.load(from: modelPath)
        let config = recipe.model.train == .full
            ? try Data(contentsOf: PipelineFolder(path: modelPath).directory("unet").appendingPathComponent("config.json")) : nil
        try self.init(recipe: recipe, pipeline: pipeline, unetConfigJSON: config, images: images, instancePrompt: instancePrompt,
                      classImages: classImages, validation: validation)
    }

    /// Trains a loaded pipeline and caches the training inputs.
    ///
    /// The trainer takes the pipeline over: it attaches adapters to its U-Net (and text
    /// encoders), trains its weights in place and, in bf16, converts its frozen weights.
    /// Give each trainer a pipeline of its own, and drop yours so that the parts training
    /// does not keep (VAE encoder, frozen text encoders) leave memory.
    ///
    /// - Parameters:
    ///   - unetConfigJSON: the U-Net's `config.json` as its folder holds it, written into
    ///     each checkpoint of a full fine-tune; nil writes `unet.config` as JSON.
    ///   - classImages: where prior preservation caches its class images (needed when
    ///     `prior.enabled`; missing ones are generated here by the base model).
    ///   - validation: the recipe's validation prompts with the subject's words filled in.
    public init(recipe: TrainingRecipe, pipeline: StableDiffusionXLPipeline, unetConfigJSON: Data? = nil,
                images: [TrainingImage], instancePrompt: String,
                classImages: ClassImageRequest? = nil, validation: ValidationTexts? = nil) throws {
        guard !recipe.prior.enabled || classImages != nil else {
            throw TrainingError("prior.enabled = true needs a class-image folder (ClassImageRequest)")
        }
        guard !images.isEmpty else { throw TrainingError("no training photos were given") }
        self.recipe = recipe
        // The run's precision (Precision.swift) for everything from here: VAE encoding,
        // class images, validation and the steps.
        Precision.compute = recipe.model.precision.resolved()

        // bf16: once every trainable weight is marked (both exits below), the frozen ones
        // are held in bf16; the adapters and a full fine-tune's U-Net stay float32.
        defer {
            if Precision.compute == .bf16 {
                for m in [pipeline.unet as any Module, pipeline.vae, pipeline.textEncoder, pipeline.textEncoder2] {
                    m.holdFrozenGEMMWeightsInBF16()
                }
            }
        }
        unet = pipeline.unet
        unet.gradientCheckpointing = recipe.model.gradientCheckpointing
        self.instancePrompt = instancePrompt
        noiseSchedule = NoiseSchedule(config: pipeline.schedulerConfig)
        predictionType = recipe.train.predictionType ?? pipeline.schedulerConfig.predictionType
        guard predictionType != .sample else {
            throw TrainingError("prediction_type \"sample\" cannot be trained here; use epsilon or v_prediction")
        }
        let timesteps = noiseSchedule.numTrainTimesteps
        if let high = recipe.train.maxTimestep, high > timesteps {
            throw TrainingError("train.max_timestep = \(high) exceeds this model's \(timesteps) training timesteps (num_train_timesteps in scheduler_config.json); set it to at most \(timesteps) or remove it")
        }
        if recipe.train.minTimestep >= timesteps {
            throw TrainingError("train.min_timestep = \(recipe.train.minTimestep) leaves none of this model's \(timesteps) training timesteps; set it below \(timesteps)")
        }

        // data.random_flip: the mirrored photos join the pool, so each pick is either
        // orientation with equal chance.
        let images = recipe.data.randomFlip ? images + images.map(Self.mirrored) : images
        let multiple = DreamBoothDataset.pixelMultiple(vae: pipeline.vae.config, unet: pipeline.unet.config)
        if let odd = images.first(where: { $0.width % multiple != 0 || $0.height % multiple != 0 }) {
            throw TrainingError("a \(odd.width)x\(odd.height) training image does not fit this model, whose sides must be multiples of \(multiple) px; prepare photos with DreamBoothDataset.prepare")
        }
        let instance = EncodedExamples(images, vae: pipeline.vae, sampling: recipe.data.latents)
        self.instance = instance
        let prior = try classImages.map {
            try PriorPreservation(recipe: recipe, request: $0, buckets: Set(instance.buckets), pixelMultiple: multiple, pipeline: pipeline)
        }
        self.prior = prior
        if let validation, !validation.prompts.isEmpty {
            validator = try ValidationSampler(recipe: recipe, texts: validation, pipeline: pipeline)
        }
        // Only the U-Net and, for validation, the VAE decoder are kept (and the text
        // encoders when they are trained): the rest of the pipeline is not referenced.
        let l = recipe.model.lora
        let loraConfig = LoRAConfig(rank: l.rank, alpha: Float(l.effectiveAlpha), dropout: Float(l.dropout))
        let trainTextEncoders = recipe.model.train == .lora && l.textEncoders
        prompts = try TrainingPromptEncoder(pipeline: pipeline, prompts: [instancePrompt] + (prior.map { [$0.prompt] } ?? []), lora: trainTextEncoders ? loraConfig : nil,
                                            seed: recipe.train.seed)
        if recipe.model.train == .full {
            let config = try unetConfigJSON ?? Self.json(pipeline.unet.config)
            lora = nil
            weights = FullUNetWeights(unet: unet, configJSON: config)
            return
        }
        var targets: [String] = []
        for t in l.targets {
            switch t {
            case .attention: targets += LoRAConfig.attentionTargets
            case .feedForward: targets += LoRAConfig.feedForwardTargets
            case .resnetConvs: targets += LoRAConfig.resnetConvTargets
            }
        }
        let unetLoRA = try LoRANetwork(attachingTo: pipeline.unet, component: "unet",
                                       config: LoRAConfig(rank: loraConfig.rank, alpha: loraConfig.alpha, dropout: loraConfig.dropout,
                                                          targetModules: targets),
                                       seed: recipe.train.seed)
        lora = unetLoRA
        weights = LoRAWeights(networks: [unetLoRA] + prompts.loraNetworks, format: recipe.checkpoint.format)
    }

    private static func json(_ config: UNet2DConditionConfig) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(config)
    }

    /// The image flipped left to right. Its crop is then the mirrored window of the flipped
    /// resized photo, as when diffusers' SDXL script flips before cropping.
    static func mirrored(_ img: TrainingImage) -> TrainingImage {
        var out = img
        let resizedWidth = AspectBuckets.coverSize(width: img.originalWidth, height: img.originalHeight, bucket: img.bucket).width
        out.cropX = max(0, resizedWidth - img.width - img.cropX)
        let n = img.width
        img.pixels.withUnsafeBufferPointer { src in
            out.pixels.withUnsafeMutableBufferPointer { dst in
                for row in 0..<(3 * img.height) {
                    for x in 0..<n { dst[row * n + x] = src[row * n + n - 1 - x] }
                }
            }
        }
        return out
    }

    /// Per-step randomness: noise and timesteps from the recipe's RNG (`torch` or
    /// `native`), picks, latent samples and dropout seeds from a native generator.
    private struct Randomness {
        var noise: any TensorRandomSource
        var other: RandomGenerator
    }

    private func makeRandomness() -> Randomness {
        let seed = recipe.train.seed
        let noise: any TensorRandomSource = recipe.train.rng == .torch ? TorchGenerator(seed: seed) : RandomGenerator(seed: seed)
        return Randomness(noise: noise, other: RandomGenerator(seed: seed &+ 0x5EED_D12E_A3B0_07A1))
    }

    private struct MicroBatch {
        var latents: Tensor
        var noise: Tensor
        var timesteps: [Int]
        var timeIds: Tensor
        var dropoutSeed: UInt64
        /// The first rows are instance examples; the rest (prior preservation) class examples.
        var instanceCount: Int
    }

    /// Draws one micro-batch; the order of draws is fixed so that replaying reproduces it.
    /// All its examples share one bucket: the first photo, drawn among all, picks it (so
    /// buckets come up in proportion to their photos), the rest are drawn within it.
    /// With prior preservation, as many class examples of that bucket follow.
    private func drawMicroBatch(_ r: inout Randomness) -> MicroBatch {
        let b = recipe.train.batchSize
        var xs: [Tensor] = [], ids: [Tensor] = []
        let first = r.other.int(below: instance.count)
        let bucket = instance.buckets[first]
        for k in 0..<b {
            let i = k == 0 ? first : instance.draw(in: bucket, &r.other)
            xs.append(instance.latent(i, &r.other))
            ids.append(instance.timeIds[i])
        }
        if let classes = prior?.examples[bucket] {
            for _ in 0..<b {
                let i = r.other.int(below: classes.count)
                xs.append(classes.latent(i, &r.other))
                ids.append(classes.timeIds[i])
            }
        }
        let x = xs.count == 1 ? xs[0] : Tensor.cat(xs, dim: 0)
        let (noise, t) = noiseSchedule.trainingNoise(shape: x.shape, offset: Float(recipe.train.noiseOffset),
                                                     minTimestep: recipe.train.minTimestep, maxTimestep: recipe.train.maxTimestep,
                                                     from: &r.noise)
        timestepsDrawn(t)
        let seed = UInt64(r.other.nextUInt32()) << 32 | UInt64(r.other.nextUInt32())
        return MicroBatch(latents: x, noise: noise, timesteps: t, timeIds: ids.count == 1 ? ids[0] : Tensor.cat(ids, dim: 0),
                          dropoutSeed: seed, instanceCount: b)
    }

    /// One micro-batch's loss (not yet scaled for accumulation).
    private func loss(_ m: MicroBatch) -> Tensor {
        let b = m.latents.shape[0], n = m.instanceCount
        let noisy = noiseSchedule.addNoise(original: m.latents, noise: m.noise, timesteps: m.timesteps)
        let target = predictionType == .vPrediction
            ? noiseSchedule.velocity(sample: m.latents, noise: m.noise, timesteps: m.timesteps) : m.noise
        weights.reseedDropout(m.dropoutSeed)
        let prompt = prompts.embeddings(for: instancePrompt)
        var hiddenRows = Array(repeating: prompt.hidden, count: n), pooledRows = Array(repeating: prompt.pooled, count: n)
        if n < b, let prior {
            // Class rows: the class prompt's conditioning.
            let c = prompts.embeddings(for: prior.prompt)
            hiddenRows += Array(repeating: c.hidden, count: b - n)
            pooledRows += Array(repeating: c.pooled, count: b - n)
        }
        let hidden = b == 1 ? prompt.hidden : Tensor.cat(hiddenRows, dim: 0)
        let pooled = b == 1 ? prompt.pooled : Tensor.cat(pooledRows, dim: 0)
        let pred = unet(sample: noisy, timestep: m.timesteps.map(Float.init), encoderHiddenStates: hidden,
                        textEmbeds: pooled, timeIds: m.timeIds)
        var perExample = pred.mseLoss(target, reduction: .none).reshape([b, -1]).mean(dim: 1)
        var weights = recipe.train.minSNRGamma.map {
            noiseSchedule.minSNRWeights(timesteps: m.timesteps, gamma: $0, predictionType: predictionType)
        }
        if recipe.train.debiasedEstimation {
            // sd-scripts multiplies the loss by the Min-SNR weight first, then by the debiased one.
            if let w = weights { perExample = perExample * Tensor(shape: [b], values: w) }
            weights = noiseSchedule.debiasedEstimationWeights(timesteps: m.timesteps, predictionType: predictionType)
        }
        return PriorPreservation.loss(perExample: perExample, weights: weights, instanceCount: n, priorWeight: prior?.weight ?? 0)
    }

    /// The mean loss over every photo at a fixed spread of timesteps with fixed noise
    /// (latent means, dropout off): a low-variance measure of progress, unlike the
    /// per-step loss, whose random timesteps make it jump.
    public func evaluationLoss(timestepsPerImage: Int = 4) -> Double {
        noGrad {
            let wasTraining = weights.training
            weights.training = false
            defer { weights.training = wasTraining }
            var g = RandomGenerator(seed: 0xE7A1)
            let n = noiseSchedule.numTrainTimesteps
            var total = 0.0, count = 0
            for (i, (mean, _)) in instance.latents.enumerated() {
                let ts = (0..<timestepsPerImage).map { k in (2 * k + 1) * n / (2 * timestepsPerImage) }
                let x = Tensor.cat(Array(repeating: mean, count: ts.count), dim: 0)
                let m = MicroBatch(latents: x, noise: Tensor.randn(x.shape, generator: &g), timesteps: ts,
                                   timeIds: Tensor.cat(Array(repeating: instance.timeIds[i], count: ts.count), dim: 0), dropoutSeed: 0,
                                   instanceCount: ts.count)
                total += Double(loss(m).item)
                count += 1
            }
            return total / Double(max(count, 1))
        }
    }

    /// Runs the optimizer loop to `train.max_steps`, writing checkpoints into `directory`.
    ///
    /// - Parameters:
    ///   - resumeFrom: a checkpoint's state JSON; training continues after its step with
    ///     its adapters, optimizer state and random streams.
    ///   - progress: called after every `train.log_every`-th step and the last one.
    ///   - checkpointSaved: called after each checkpoint is written (to record it).
    ///   - checkpointExpired: called for each older checkpoint that `checkpoint.keep_last`
    ///     retires, after the newer one was saved; it must delete the files (and records).
    ///   - validationImage: called with each validation image, after the step's checkpoint.
    ///   - validationRecorded: whether the validation images with these file names
    ///     (`ValidationImage.fileName`) were all kept already; asked on resume only.
    ///   - shouldStop: polled after every step; when true, a checkpoint of that step is
    ///     saved and `TrainingInterrupted` thrown.
    ///
    /// On resume the end of the checkpoint step resumed from is done again, since a kill
    /// can land anywhere in it: `checkpointSaved` for its files, `checkpointExpired` for
    /// what it retires, and its validation images unless `validationRecorded`. The
    /// callbacks must therefore accept a repeat (the CLI's are upserts).
    /// - Returns: the state of the last checkpoint.
    @discardableResult
    public func train(directory: URL, resumeFrom: URL? = nil,
                      progress: (TrainingProgress) throws -> Void = { _ in },
                      checkpointSaved: (TrainingCheckpointFiles) throws -> Void = { _ in },
                      checkpointExpired: (ExpiredCheckpoint) throws -> Void = CheckpointRetention.deleteFiles,
                      validationImage: (ValidationImage) throws -> Void = { _ in },
                      validationRecorded: ([String]) -> Bool = { _ in false },
                      shouldStop: () -> Bool = { false }) throws -> TrainingCheckpointState {
        var r = makeRandomness()
        weights.training = true
        let loop = TrainingLoop(recipe: recipe, weights: weights)
        ema = loop.ema
        let state = try loop.run(
            directory: directory, resumeFrom: resumeFrom,
            microBatchLoss: { _ in loss(drawMicroBatch(&r)) }, skipMicroBatch: { _ = drawMicroBatch(&r) },
            progress: progress, checkpointSaved: checkpointSaved, checkpointExpired: checkpointExpired,
            validator: validator, drawValidation: { try draw(validator!, step: $0, validationImage) },
            validationRecorded: validationRecorded,
            shouldStop: shouldStop)
        weights.training = false
        return state
    }

    /// Draws the validation images with the weights as trained so far (dropout off;
    /// `TrainingLoop` swaps in their EMA when asked); trained text encoders encode the
    /// prompts anew.
    private func draw(_ validator: ValidationSampler, step: Int, _ body: (ValidationImage) throws -> Void) throws {
        let wasTraining = weights.training
        weights.training = false
        defer { weights.training = wasTraining }
        let fresh = !prompts.trainsTextEncoders ? nil : noGrad {
            ValidationPrompt.encode(validator.prompts.map(\.prompt), negativePrompt: validator.prompts.first?.negativePrompt,
                                    forceZerosForEmptyPrompt: validator.forceZerosForEmptyPrompt) { texts in
                let e = prompts.embeddings(for: texts[0])
                return PromptEmbeddings(hiddenStates: e.hidden, pooled: e.pooled)
            }
        }
        try validator.draw(unet: unet, step: step, prompts: fresh, body)
    }

    /// The resume states in a run directory, oldest first.
    public static func checkpointStates(in directory: URL) -> [(step: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name -> (Int, URL)? in
            CheckpointName.step(ofStateFile: name).map { ($0, directory.appendingPathComponent(name)) }
        }.sorted { $0.0 < $1.0 }
    }

    /// Peak resident memory of this process in bytes.
    public static func peakRSSBytes() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss) * 1024  // Linux reports kilobytes
    }
}
