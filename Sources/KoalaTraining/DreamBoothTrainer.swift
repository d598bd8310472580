import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

/// One instance photo, already cropped to the training square: planar RGB floats in
/// [-1, 1] (`RGBImage.planarFloats()`), plus what SDXL's micro-conditioning needs.
public struct TrainingImage: Sendable {
    public var pixels: [Float]
    public var size: Int
    /// The photo's size before resizing (`original_size`).
    public var originalWidth: Int
    public var originalHeight: Int
    /// Top-left corner of the crop in the resized photo (`crops_coords_top_left` is (y, x)).
    public var cropX: Int
    public var cropY: Int

    public init(pixels: [Float], size: Int, originalWidth: Int, originalHeight: Int, cropX: Int = 0, cropY: Int = 0) {
        precondition(pixels.count == 3 * size * size, "TrainingImage: \(pixels.count) values for a \(size)x\(size) RGB image")
        self.pixels = pixels
        self.size = size
        self.originalWidth = originalWidth
        self.originalHeight = originalHeight
        self.cropX = cropX
        self.cropY = cropY
    }
}

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
    /// The diffusers `unet` folder of a full fine-tuning checkpoint.
    public var unetFolder: String? = nil
    public var optimizerFile: String
}

/// A DreamBooth recipe or input this trainer cannot run.
/// Thrown by `train` when `shouldStop` asked it to stop; a checkpoint of `step` was saved.
public struct TrainingInterrupted: Error, CustomStringConvertible {
    public let step: Int
    public var description: String { "training interrupted after step \(step)" }
}

public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// DreamBooth training of an SDXL-family U-Net on cached latents: LoRA adapters
/// (optionally on both text encoders too) or every U-Net weight (`model.train = "full"`).
///
/// `init` loads the model, encodes the photos once with the VAE, and either caches the
/// instance prompt's embeddings or keeps the text encoders with adapters
/// (`TrainingPromptEncoder`); `train` runs the optimizer loop, calling back with progress
/// and after every checkpoint.
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
    /// Latent distribution per photo (mean, std); std is nil when training on the mean.
    private let latents: [(mean: Tensor, std: Tensor?)]
    private let timeIds: [Tensor]
    /// Notes about recipe keys this trainer approximates (shown to the user).
    public private(set) var notes: [String] = []

    /// Loads the diffusers folder at `modelPath` and caches the training inputs.
    public init(recipe: TrainingRecipe, modelPath: String, images: [TrainingImage], instancePrompt: String) throws {
        guard !recipe.prior.enabled else {
            throw TrainingError("prior.enabled = true (prior preservation) is not supported yet; set prior.enabled = false")
        }
        guard !images.isEmpty else { throw TrainingError("no training photos; add some with `koalabooth subject add`") }
        self.recipe = recipe
        if recipe.data.aspectBuckets { notes.append("data.aspect_buckets: photos are trained as center/random squares") }
        if !recipe.validation.prompts.isEmpty && recipe.validation.every > 0 { notes.append("validation images are not drawn yet") }

        let pipeline = try StableDiffusionXLPipeline.load(from: modelPath)
        unet = pipeline.unet
        unet.gradientCheckpointing = recipe.model.gradientCheckpointing
        self.instancePrompt = instancePrompt
        noiseSchedule = NoiseSchedule(config: pipeline.schedulerConfig)
        predictionType = recipe.train.predictionType ?? pipeline.schedulerConfig.predictionType
        guard predictionType != .sample else {
            throw TrainingError("prediction_type \"sample\" cannot be trained here; use epsilon or v_prediction")
        }

        // data.random_flip: the mirrored photos join the pool, so each pick is either
        // orientation with equal chance.
        let images = recipe.data.randomFlip ? images + images.map(Self.mirrored) : images
        let scale = Float(pipeline.vae.config.scalingFactor)
        let useMean = recipe.data.latents == .mean
        latents = noGrad {
            images.map { img in
                let x = Tensor(shape: [1, 3, img.size, img.size], values: img.pixels)
                let dist = pipeline.vae.encode(x)
                return (dist.mean * scale, useMean ? nil : dist.std * scale)
            }
        }
        timeIds = images.map { img in
            Tensor(shape: [1, 6], values: [Float(img.originalHeight), Float(img.originalWidth), Float(img.cropY), Float(img.cropX),
                                           Float(img.size), Float(img.size)])
        }
        // The pipeline (and with it the VAE, and the text encoders unless they are trained)
        // is released when `init` returns.
        let l = recipe.model.lora
        let loraConfig = LoRAConfig(rank: l.rank, alpha: Float(l.effectiveAlpha), dropout: Float(l.dropout))
        let trainTextEncoders = recipe.model.train == .lora && l.textEncoders
        prompts = try TrainingPromptEncoder(pipeline: pipeline, prompts: [instancePrompt], lora: trainTextEncoders ? loraConfig : nil,
                                            seed: recipe.train.seed)
        if recipe.model.train == .full {
            let config = try Data(contentsOf: PipelineFolder(path: modelPath).directory("unet").appendingPathComponent("config.json"))
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

    /// The image flipped left to right.
    static func mirrored(_ img: TrainingImage) -> TrainingImage {
        var out = img
        let n = img.size
        img.pixels.withUnsafeBufferPointer { src in
            out.pixels.withUnsafeMutableBufferPointer { dst in
                for row in 0..<(3 * n) {
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
    }

    /// Draws one micro-batch; the order of draws is fixed so that replaying reproduces it.
    private func drawMicroBatch(_ r: inout Randomness) -> MicroBatch {
        let b = recipe.train.batchSize
        var xs: [Tensor] = [], ids: [Tensor] = []
        for _ in 0..<b {
            let i = r.other.int(below: latents.count)
            let (mean, std) = latents[i]
            xs.append(std.map { mean + $0 * Tensor.randn(mean.shape, generator: &r.other) } ?? mean)
            ids.append(timeIds[i])
        }
        let x = b == 1 ? xs[0] : Tensor.cat(xs, dim: 0)
        var noise = r.noise.randn(x.shape)
        if recipe.train.noiseOffset != 0 {
            let offset = r.noise.randn([x.shape[0], x.shape[1], 1, 1]) * Float(recipe.train.noiseOffset)
            noise = noise + offset.expand(x.shape)
        }
        let t = r.noise.randint(low: 0, high: noiseSchedule.numTrainTimesteps, count: b)
        let seed = UInt64(r.other.nextUInt32()) << 32 | UInt64(r.other.nextUInt32())
        return MicroBatch(latents: x, noise: noise, timesteps: t, timeIds: b == 1 ? ids[0] : Tensor.cat(ids, dim: 0), dropoutSeed: seed)
    }

    /// One micro-batch's loss (not yet scaled for accumulation).
    private func loss(_ m: MicroBatch) -> Tensor {
        let b = m.latents.shape[0]
        let noisy = noiseSchedule.addNoise(original: m.latents, noise: m.noise, timesteps: m.timesteps)
        let target = predictionType == .vPrediction
            ? noiseSchedule.velocity(sample: m.latents, noise: m.noise, timesteps: m.timesteps) : m.noise
        weights.reseedDropout(m.dropoutSeed)
        let prompt = prompts.embeddings(for: instancePrompt)
        let hidden = b == 1 ? prompt.hidden : Tensor.cat(Array(repeating: prompt.hidden, count: b), dim: 0)
        let pooled = b == 1 ? prompt.pooled : Tensor.cat(Array(repeating: prompt.pooled, count: b), dim: 0)
        let pred = unet(sample: noisy, timestep: m.timesteps.map(Float.init), encoderHiddenStates: hidden,
                        textEmbeds: pooled, timeIds: m.timeIds)
        guard let gamma = recipe.train.minSNRGamma else { return pred.mseLoss(target) }
        // Min-SNR-γ (diffusers' training scripts): per-example MSE weighted by
        // min(SNR, γ)/SNR for epsilon, min(SNR, γ)/(SNR + 1) for v-prediction.
        let snr = noiseSchedule.snr(timesteps: m.timesteps)
        let weights = snr.map { s in Float(min(Double(s), gamma)) / (predictionType == .vPrediction ? s + 1 : s) }
        let perExample = pred.mseLoss(target, reduction: .none).reshape([b, -1]).mean(dim: 1)
        return (perExample * Tensor(shape: [b], values: weights)).mean()
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
            for (i, (mean, _)) in latents.enumerated() {
                let ts = (0..<timestepsPerImage).map { k in (2 * k + 1) * n / (2 * timestepsPerImage) }
                let x = Tensor.cat(Array(repeating: mean, count: ts.count), dim: 0)
                let m = MicroBatch(latents: x, noise: Tensor.randn(x.shape, generator: &g), timesteps: ts,
                                   timeIds: Tensor.cat(Array(repeating: timeIds[i], count: ts.count), dim: 0), dropoutSeed: 0)
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
    ///   - shouldStop: polled after every step; when true, a checkpoint of that step is
    ///     saved and `TrainingInterrupted` thrown.
    /// - Returns: the state of the last checkpoint.
    @discardableResult
    public func train(directory: URL, resumeFrom: URL? = nil,
                      progress: (TrainingProgress) throws -> Void = { _ in },
                      checkpointSaved: (TrainingCheckpointFiles) throws -> Void = { _ in },
                      shouldStop: () -> Bool = { false }) throws -> TrainingCheckpointState {
        let total = recipe.train.maxSteps
        let accumulation = recipe.train.gradientAccumulation
        let params = weights.parameters
        let optimizer = recipe.optim.makeOptimizer()
        let schedule = recipe.optim.schedule(totalSteps: total)
        let smoothing = recipe.train.lossSmoothing
        var r = makeRandomness()
        var start = 0
        var smoothed = 0.0, smoothWeight = 0.0
        var lastLoss: Double?
        var elapsedBefore = 0.0
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        if let resumeFrom {
            let state = try JSONDecoder().decode(TrainingCheckpointState.self, from: Data(contentsOf: resumeFrom))
            guard state.seed == recipe.train.seed, state.rng == recipe.train.rng.rawValue else {
                throw TrainingError("\(resumeFrom.path) was saved with seed \(state.seed) (rng \(state.rng)); resume with the same recipe and --seed")
            }
            let dir = resumeFrom.deletingLastPathComponent()
            try weights.load(state, from: dir)
            try optimizer.load(stateDict: OptimizerState.load(from: dir.appendingPathComponent(state.optimizerFile).path))
            for _ in 0..<(state.rngReplaySteps * accumulation) { _ = drawMicroBatch(&r) }
            start = state.step
            smoothed = state.smoothedLoss.map { $0 * state.smoothingWeight } ?? 0
            smoothWeight = state.smoothingWeight
            lastLoss = state.lastLoss
            elapsedBefore = state.elapsedSeconds
        }

        weights.training = true
        let began = Date()
        var last: TrainingCheckpointState?
        var step = start
        while step < total {
            var stepLoss = 0.0
            for _ in 0..<accumulation {
                let m = drawMicroBatch(&r)
                let l = loss(m)
                stepLoss += Double(l.item) / Double(accumulation)
                (accumulation == 1 ? l : l * (1 / Float(accumulation))).backward()
            }
            guard stepLoss.isFinite else {
                throw TrainingError("the loss became \(stepLoss) at step \(step + 1); lower optim.learning_rate (now \(recipe.optim.learningRate))")
            }
            if recipe.optim.maxGradNorm > 0 { _ = GradientClipping.clipGradNorm(params, maxNorm: recipe.optim.maxGradNorm) }
            let lr = schedule.learningRate(atStep: step)
            optimizer.learningRate = lr
            optimizer.step(params)
            optimizer.zeroGrad(params)
            step += 1
            lastLoss = stepLoss
            // Bias-corrected exponential average, so early values are not pulled toward 0.
            smoothed = smoothing * smoothed + (1 - smoothing) * stepLoss
            smoothWeight = smoothing * smoothWeight + (1 - smoothing)
            let shown = smoothing > 0 ? smoothed / smoothWeight : stepLoss

            if step == total || step % max(1, recipe.train.logEvery) == 0 {
                let spent = Date().timeIntervalSince(began)
                let perStep = spent / Double(step - start)
                try progress(TrainingProgress(step: step, totalSteps: total, loss: stepLoss, smoothedLoss: shown, learningRate: lr,
                                              secondsPerStep: perStep, etaSeconds: perStep * Double(total - step),
                                              peakRSSBytes: Self.peakRSSBytes()))
            }
            let stopping = step < total && shouldStop()
            if stopping || step == total || (recipe.checkpoint.every > 0 && step % recipe.checkpoint.every == 0) {
                let state = TrainingCheckpointState(
                    step: step, totalSteps: total, seed: recipe.train.seed, rng: recipe.train.rng.rawValue, rngReplaySteps: step,
                    smoothedLoss: smoothWeight > 0 ? smoothed / smoothWeight : nil, smoothingWeight: smoothWeight,
                    lastLoss: lastLoss, elapsedSeconds: elapsedBefore + Date().timeIntervalSince(began),
                    loraFile: nil, kohyaFile: nil, optimizerFile: "")
                let (files, saved) = try saveCheckpoint(state, optimizer: optimizer, directory: directory)
                last = saved
                try checkpointSaved(files)
            }
            if stopping { throw TrainingInterrupted(step: step) }
        }
        weights.training = false
        if let last { return last }
        // Resumed at the end already: nothing new to save.
        return TrainingCheckpointState(step: step, totalSteps: total, seed: recipe.train.seed, rng: recipe.train.rng.rawValue,
                                       rngReplaySteps: step, smoothedLoss: nil, smoothingWeight: smoothWeight, lastLoss: lastLoss,
                                       elapsedSeconds: elapsedBefore, loraFile: nil, kohyaFile: nil, optimizerFile: "")
    }

    private func saveCheckpoint(_ state: TrainingCheckpointState, optimizer: any Optimizer,
                                directory: URL) throws -> (TrainingCheckpointFiles, TrainingCheckpointState) {
        var state = state
        let tag = String(format: "step%06d", state.step)
        try weights.save(tag: tag, into: directory, state: &state)
        state.optimizerFile = "optimizer-\(tag).safetensors"
        try optimizer.stateDict().save(to: directory.appendingPathComponent(state.optimizerFile).path)
        let stateURL = directory.appendingPathComponent("state-\(tag).json")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: stateURL, options: .atomic)
        pruneCheckpoints(in: directory, keeping: state.step)
        return (TrainingCheckpointFiles(step: state.step, lora: state.loraFile.map(directory.appendingPathComponent),
                                        kohya: state.kohyaFile.map(directory.appendingPathComponent),
                                        unet: state.unetFolder.map(directory.appendingPathComponent),
                                        optimizerState: directory.appendingPathComponent(state.optimizerFile), state: stateURL), state)
    }

    /// `checkpoint.keep_last`: older checkpoints lose their optimizer and resume state
    /// (the large, resume-only files); their LoRA files stay, since the store records them.
    private func pruneCheckpoints(in directory: URL, keeping step: Int) {
        guard let keep = recipe.checkpoint.keepLast, keep > 0 else { return }
        let states = Self.checkpointStates(in: directory)
        for (oldStep, url) in states.dropLast(keep) where oldStep != step {
            let tag = String(format: "step%06d", oldStep)
            try? FileManager.default.removeItem(at: url)
            try? FileManager.default.removeItem(at: directory.appendingPathComponent("optimizer-\(tag).safetensors"))
        }
    }

    /// The resume states in a run directory, oldest first.
    public static func checkpointStates(in directory: URL) -> [(step: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name -> (Int, URL)? in
            guard name.hasPrefix("state-step"), name.hasSuffix(".json"),
                  let s = Int(name.dropFirst("state-step".count).dropLast(".json".count)) else { return nil }
            return (s, directory.appendingPathComponent(name))
        }.sorted { $0.0 < $1.0 }
    }

    /// Peak resident memory of this process in bytes.
    public static func peakRSSBytes() -> Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss) * 1024  // Linux reports kilobytes
    }
}
