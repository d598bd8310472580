import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

/// One cached example of a distillation run: an image's latents (× the VAE's scaling
/// factor) and its caption's conditioning, each with a batch dimension of 1; made by
/// `encode(_:data:seed:pipeline:)` (and in tests by the memberwise init).
public struct DistillationExample {
    /// [1, 4, h, w].
    public let latents: Tensor
    /// Penultimate hidden states of both text encoders, [1, S, cross_attention_dim].
    public let hiddenStates: Tensor
    /// Pooled text embedding, [1, P].
    public let pooled: Tensor
    /// SDXL `add_time_ids`, [1, 6].
    public let timeIds: Tensor
}

/// One line of distillation progress: the step's totals and its three terms (means
/// over its micro-batches, unweighted).
public struct DistillationProgress: Sendable {
    public let training: TrainingProgress
    public let task: Double
    public let output: Double
    public let feature: Double
}

/// KOALA's distillation loop (paper Sec. 4.2): every weight of `student` trained on
/// `DistillationLoss` against the frozen `teacher`, over cached examples, with the
/// DreamBooth trainer's pieces — the recipe's optimizer and learning-rate schedule,
/// clipping, accumulation, the same checkpoints (a diffusers `unet-stepN/` folder,
/// optimizer state, resume state) and the same exact resume (each step's draws are a
/// fixed sequence replayed from the seed).
public final class DistillationTrainer {
    public let recipe: DistillationRecipe
    public let student: UNet2DConditionModel
    public let teacher: UNet2DConditionModel
    public let loss: DistillationLoss
    public let noiseSchedule: NoiseSchedule
    public let predictionType: PredictionType
    /// Draws the `[validation]` images with the student; nil without validation prompts.
    public let validator: ValidationSampler?
    let examples: [DistillationExample]
    let weights: FullUNetWeights

    /// - Parameters:
    ///   - studentConfigJSON: the student's `config.json`, written into every checkpoint.
    ///   - validator: made with the teacher pipeline (its text encoders and VAE decoder).
    public init(recipe: DistillationRecipe, student: UNet2DConditionModel, studentConfigJSON: Data,
                teacher: UNet2DConditionModel, noiseSchedule: NoiseSchedule, predictionType: PredictionType,
                examples: [DistillationExample], validator: ValidationSampler? = nil) throws {
        guard !examples.isEmpty else { throw TrainingError("no distillation examples were given") }
        guard predictionType != .sample else {
            throw TrainingError("prediction_type \"sample\" cannot be distilled here; use epsilon or v_prediction")
        }
        self.recipe = recipe
        self.student = student
        self.teacher = teacher
        self.noiseSchedule = noiseSchedule
        self.predictionType = predictionType
        self.examples = examples
        self.validator = validator
        loss = try DistillationLoss(student: student, teacher: teacher, mode: recipe.distill.features,
                                    mapping: recipe.distill.mapping, weights: recipe.distill.weights)
        teacher.setRequiresGrad(false)
        student.gradientCheckpointing = recipe.training.model.gradientCheckpointing
        weights = FullUNetWeights(unet: student, configJSON: studentConfigJSON)
    }

    private struct MicroBatch {
        var latents, noise, hidden, pooled, timeIds: Tensor
        var timesteps: [Int]
    }

    private struct Randomness {
        var noise: any TensorRandomSource
        var picks: RandomGenerator
    }

    private func makeRandomness() -> Randomness {
        let t = recipe.training.train
        let noise: any TensorRandomSource = t.rng == .torch ? TorchGenerator(seed: t.seed) : RandomGenerator(seed: t.seed)
        return Randomness(noise: noise, picks: RandomGenerator(seed: t.seed &+ 0xD157_111A_7E5D_0001))
    }

    /// Draws one micro-batch of examples of one latent size (the first pick decides it);
    /// the order of draws is fixed so that replaying reproduces it.
    private func draw(_ r: inout Randomness) -> MicroBatch {
        let first = r.picks.int(below: examples.count)
        let size = examples[first].latents.shape
        let same = examples.indices.filter { examples[$0].latents.shape == size }
        let picks = [first] + (1..<recipe.training.train.batchSize).map { _ in same[r.picks.int(below: same.count)] }
        func cat(_ f: (DistillationExample) -> Tensor) -> Tensor {
            picks.count == 1 ? f(examples[first]) : Tensor.cat(picks.map { f(examples[$0]) }, dim: 0)
        }
        let x = cat(\.latents)
        let (noise, t) = noiseSchedule.trainingNoise(shape: x.shape, offset: Float(recipe.training.train.noiseOffset),
                                                     from: &r.noise)
        return MicroBatch(latents: x, noise: noise, hidden: cat(\.hiddenStates), pooled: cat(\.pooled),
                          timeIds: cat(\.timeIds), timesteps: t)
    }

    private func terms(_ m: MicroBatch) -> DistillationLossTerms {
        let noisy = noiseSchedule.addNoise(original: m.latents, noise: m.noise, timesteps: m.timesteps)
        let target = predictionType == .vPrediction
            ? noiseSchedule.velocity(sample: m.latents, noise: m.noise, timesteps: m.timesteps) : m.noise
        return loss(student: student, teacher: teacher, sample: noisy, timestep: m.timesteps.map(Float.init),
                    encoderHiddenStates: m.hidden, textEmbeds: m.pooled, timeIds: m.timeIds, target: target)
    }

    /// How far the student's prediction is from the teacher's on noise and timesteps that
    /// training did not draw, for `examples` (nil: the training ones; pass held-out
    /// images and captions to measure generalisation): mean over `count` (example, noise,
    /// timestep) triples drawn from `seed` of MSE(student, teacher) / mean(teacher²).
    /// Both without gradients.
    public func relativeOutputMSE(on examples: [DistillationExample]? = nil, seed: UInt64 = 0x4E1D_0007, count: Int = 8) -> Double {
        let examples = examples ?? self.examples
        return noGrad {
            var g = RandomGenerator(seed: seed)
            var total = 0.0
            for _ in 0..<count {
                let e = examples[g.int(below: examples.count)]
                let noise = Tensor.randn(e.latents.shape, generator: &g)
                let t = [g.int(below: noiseSchedule.numTrainTimesteps)]
                let noisy = noiseSchedule.addNoise(original: e.latents, noise: noise, timesteps: t)
                func predict(_ m: UNet2DConditionModel) -> Tensor {
                    m(sample: noisy, timestep: t.map(Float.init), encoderHiddenStates: e.hiddenStates,
                      textEmbeds: e.pooled, timeIds: e.timeIds)
                }
                let teacherOut = predict(teacher)
                let gap = Double(predict(student).mseLoss(teacherOut).item)
                let scale = Double(teacherOut.mseLoss(Tensor.zeros(teacherOut.shape)).item)
                total += gap / max(scale, 1e-12)
            }
            return total / Double(count)
        }
    }

    /// Runs the optimizer loop to `train.max_steps`, writing checkpoints into `directory`
    /// (resuming after the step of `resumeFrom`, a checkpoint's state JSON); the
    /// validation images and their callbacks as `DreamBoothTrainer.train`'s.
    /// - Returns: the state of the last checkpoint.
    @discardableResult
    public func train(directory: URL, resumeFrom: URL? = nil,
                      progress: (DistillationProgress) throws -> Void = { _ in },
                      checkpointSaved: (TrainingCheckpointFiles) throws -> Void = { _ in },
                      validationImage: (ValidationImage) throws -> Void = { _ in },
                      validationRecorded: ([String]) -> Bool = { _ in false },
                      shouldStop: () -> Bool = { false }) throws -> TrainingCheckpointState {
        let accumulation = Double(recipe.training.train.gradientAccumulation)
        var r = makeRandomness()
        // The step's three terms, means over its micro-batches.
        var task = 0.0, output = 0.0, feature = 0.0
        var loop = TrainingLoop(recipe: recipe.training, weights: weights)
        loop.lossName = "distillation loss"
        return try loop.run(
            directory: directory, resumeFrom: resumeFrom,
            microBatchLoss: { k in
                if k == 0 { (task, output, feature) = (0, 0, 0) }
                let t = terms(draw(&r))
                task += Double(t.task.item) / accumulation
                output += Double(t.output.item) / accumulation
                feature += Double(t.feature.item) / accumulation
                return t.total
            },
            skipMicroBatch: { _ = draw(&r) },
            progress: { try progress(DistillationProgress(training: $0, task: task, output: output, feature: feature)) },
            checkpointSaved: checkpointSaved, checkpointExpired: CheckpointRetention.deleteFiles,
            validator: validator, drawValidation: { try validator!.draw(unet: student, step: $0, validationImage) },
            validationRecorded: validationRecorded,
            shouldStop: shouldStop)
    }
}
