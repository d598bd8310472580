import Foundation
import KoalaTensor

/// The optimizer loop the DreamBooth and distillation trainers share: gradient
/// accumulation, the scheduled update, smoothed loss and progress lines, checkpoints
/// (each file durable, the resume state last), `checkpoint.keep_last` retention, exact
/// resume and stopping at a step boundary. A trainer brings what differs: how one
/// micro-batch is drawn and what its loss is.
struct TrainingLoop {
    let recipe: TrainingRecipe
    let weights: any TrainedWeights
    /// The average of `weights` when `ema.enabled`: updated after every `ema.update_every`-th
    /// step, saved with each checkpoint and restored on resume.
    let ema: EMAModel?
    /// What the loss is called in the error when it stops being finite.
    var lossName = "loss"

    /// The EMA (when the recipe keeps one) starts from the weights as they are now.
    init(recipe: TrainingRecipe, weights: any TrainedWeights) {
        self.recipe = recipe
        self.weights = weights
        ema = recipe.ema.enabled ? recipe.ema.makeModel(parameters: weights.parameters) : nil
    }

    /// Runs the loop to `train.max_steps`, writing checkpoints into `directory`.
    ///
    /// - Parameters:
    ///   - microBatchLoss: draws the `index`-th micro-batch of a step (0 starts a step)
    ///     and returns its loss, not yet scaled for accumulation.
    ///   - skipMicroBatch: draws one micro-batch and drops it: on resume the random
    ///     streams are replayed this way, so the draws after the checkpoint are exact.
    ///   - validator, drawValidation: the run's `[validation]` images, drawn (and handed
    ///     over) by `drawValidation` after each step `validator` has them due (after its
    ///     checkpoint), and again for the step resumed at unless `validationRecorded`.
    ///   - The others: as `DreamBoothTrainer.train`.
    func run(directory: URL, resumeFrom: URL?,
             microBatchLoss: (_ index: Int) -> Tensor, skipMicroBatch: () -> Void,
             progress: (TrainingProgress) throws -> Void,
             checkpointSaved: (TrainingCheckpointFiles) throws -> Void,
             checkpointExpired: (ExpiredCheckpoint) throws -> Void,
             validator: ValidationSampler? = nil, drawValidation: (_ step: Int) throws -> Void = { _ in },
             validationRecorded: ([String]) -> Bool = { _ in false },
             shouldStop: () -> Bool) throws -> TrainingCheckpointState {
        let total = recipe.train.maxSteps
        let accumulation = recipe.train.gradientAccumulation
        let params = weights.parameters
        let optimizer = recipe.optim.makeOptimizer()
        let schedule = recipe.optim.schedule(totalSteps: total)
        let smoothing = recipe.train.lossSmoothing
        var start = 0
        // The newest checkpoint: the resumed one until a step saves another.
        var last: TrainingCheckpointState?
        var smoothed = 0.0, smoothWeight = 0.0
        var lastLoss: Double?
        var elapsedBefore = 0.0
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        DurableWrite.removeLeftovers(in: directory)
        // Writes the checkpoint's store record and retires older checkpoints.
        // With the EMA swapped in when `ema.use_for` asks for it.
        func validate(_ step: Int, resumed: Bool) throws {
            guard let validator, validator.isDue(step: step, totalSteps: total),
                  !(resumed && validationRecorded(validator.fileNames(step: step))) else { return }
            if let ema, recipe.ema.useFor.forValidation {
                try ema.withAveragedWeights(in: params) { try drawValidation(step) }
            } else {
                try drawValidation(step)
            }
        }
        func finish(_ files: TrainingCheckpointFiles) throws {
            try checkpointSaved(files)
            if let keep = recipe.checkpoint.keepLast {
                for old in CheckpointRetention.expired(in: directory, keep: keep) where old.step != files.step { try checkpointExpired(old) }
            }
        }

        if let resumeFrom {
            let (state, dir) = try TrainingCheckpointState.resume(from: resumeFrom, seed: recipe.train.seed, rng: recipe.train.rng.rawValue,
                                                                  weights: weights, optimizer: optimizer, ema: ema)
            for _ in 0..<(state.rngReplaySteps * accumulation) { skipMicroBatch() }
            start = state.step
            smoothed = state.smoothedLoss.map { $0 * state.smoothingWeight } ?? 0
            smoothWeight = state.smoothingWeight
            lastLoss = state.lastLoss
            elapsedBefore = state.elapsedSeconds
            last = state
            // Its files loaded, so they are whole: finish the step they were saved at.
            try finish(TrainingCheckpointFiles(state: state, in: dir))
            try validate(start, resumed: true)
        }

        let began = Date()
        var step = start
        while step < total {
            var stepLoss = 0.0
            for k in 0..<accumulation {
                let l = microBatchLoss(k)
                stepLoss += Double(l.item) / Double(accumulation)
                (accumulation == 1 ? l : l * (1 / Float(accumulation))).backward()
            }
            guard stepLoss.isFinite else {
                throw TrainingError("the \(lossName) became \(stepLoss) at step \(step + 1); lower optim.learning_rate (now \(recipe.optim.learningRate))")
            }
            let lr = schedule.learningRate(atStep: step)
            optimizer.step(params, rate: lr, maxGradNorm: recipe.optim.maxGradNorm)
            step += 1
            if let ema, step % recipe.ema.updateEvery == 0 { ema.update(params) }
            lastLoss = stepLoss
            // Bias-corrected exponential average, so early values are not pulled toward 0.
            smoothed = smoothing * smoothed + (1 - smoothing) * stepLoss
            smoothWeight = smoothing * smoothWeight + (1 - smoothing)
            let shown = smoothing > 0 ? smoothed / smoothWeight : stepLoss

            if step == total || step % max(1, recipe.train.logEvery) == 0 {
                let perStep = Date().timeIntervalSince(began) / Double(step - start)
                try progress(TrainingProgress(step: step, totalSteps: total, loss: stepLoss, smoothedLoss: shown, learningRate: lr,
                                              secondsPerStep: perStep, etaSeconds: perStep * Double(total - step),
                                              peakRSSBytes: DreamBoothTrainer.peakRSSBytes()))
            }
            let stopping = step < total && shouldStop()
            if stopping || step == total || (recipe.checkpoint.every > 0 && step % recipe.checkpoint.every == 0) {
                let state = TrainingCheckpointState(
                    step: step, totalSteps: total, seed: recipe.train.seed, rng: recipe.train.rng.rawValue, rngReplaySteps: step,
                    smoothedLoss: smoothWeight > 0 ? smoothed / smoothWeight : nil, smoothingWeight: smoothWeight,
                    lastLoss: lastLoss, elapsedSeconds: elapsedBefore + Date().timeIntervalSince(began),
                    loraFile: nil, kohyaFile: nil, precision: Precision.compute.rawValue, optimizerFile: "")
                let saved = try save(state, optimizer: optimizer, directory: directory)
                last = saved
                try finish(TrainingCheckpointFiles(state: saved, in: directory))
            }
            if stopping { throw TrainingInterrupted(step: step) }
            try validate(step, resumed: false)
        }
        if let last { return last }
        // max_steps = 0: nothing trained, nothing saved.
        return TrainingCheckpointState(step: step, totalSteps: total, seed: recipe.train.seed, rng: recipe.train.rng.rawValue,
                                       rngReplaySteps: step, smoothedLoss: nil, smoothingWeight: smoothWeight, lastLoss: lastLoss,
                                       elapsedSeconds: elapsedBefore, loraFile: nil, kohyaFile: nil, optimizerFile: "")
    }

    /// Writes a checkpoint's files, each durably (`DurableWrite`), the resume state last:
    /// a state file on disk means every file it names is complete.
    private func save(_ state: TrainingCheckpointState, optimizer: any Optimizer,
                      directory: URL) throws -> TrainingCheckpointState {
        var state = state
        let name = CheckpointName(step: state.step)
        if let ema, recipe.ema.useFor.forExport {
            // The exported files hold the average; the raw weights, which training continues
            // from, are kept beside them for resume.
            state.rawWeightsFile = name.rawWeightsFile
            try DurableWrite.file(directory.appendingPathComponent(name.rawWeightsFile)) { try RawWeights.save(weights.parameters, to: $0) }
            try ema.withAveragedWeights(in: weights.parameters) { try weights.save(tag: name.tag, into: directory, state: &state) }
        } else {
            try weights.save(tag: name.tag, into: directory, state: &state)
        }
        if let ema {
            state.emaFile = name.emaFile
            try DurableWrite.file(directory.appendingPathComponent(name.emaFile)) { try ema.stateDict().save(to: $0.path) }
        }
        state.optimizerFile = name.optimizerFile
        try DurableWrite.file(directory.appendingPathComponent(state.optimizerFile)) { try optimizer.stateDict().save(to: $0.path) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json = try encoder.encode(state)
        try DurableWrite.file(directory.appendingPathComponent(name.stateFile)) { try json.write(to: $0) }
        return state
    }
}

extension TrainingCheckpointFiles {
    /// The files of the checkpoint whose resume state is `state`, in `directory`.
    init(state: TrainingCheckpointState, in directory: URL) {
        self.init(step: state.step, lora: state.loraFile.map(directory.appendingPathComponent),
                  kohya: state.kohyaFile.map(directory.appendingPathComponent),
                  unet: state.unetFolder.map(directory.appendingPathComponent),
                  optimizerState: directory.appendingPathComponent(state.optimizerFile),
                  ema: state.emaFile.map(directory.appendingPathComponent),
                  rawWeights: state.rawWeightsFile.map(directory.appendingPathComponent),
                  state: directory.appendingPathComponent(CheckpointName(step: state.step).stateFile))
    }
}

/// The trained weights as training continues from them, when a checkpoint's exported
/// files hold their EMA instead (`ema.use_for`): `param.N` in the optimizer's order.
enum RawWeights {
    static func save(_ parameters: [Tensor], to url: URL) throws {
        var tensors: [String: Tensor] = [:]
        for (i, p) in parameters.enumerated() { tensors["param.\(i)"] = p }
        try OptimizerState(tensors: tensors, metadata: ["raw_weights": "TrainedWeights", "param_count": String(parameters.count)])
            .save(to: url.path)
    }

    /// Writes the saved values into `parameters`, after checking that the file holds them all.
    static func load(_ url: URL, into parameters: [Tensor]) throws {
        let st = try OptimizerState.load(from: url.path)
        guard st.metadata["raw_weights"] == "TrainedWeights", try st.int("param_count") == parameters.count else {
            throw TrainingError("\(url.path) does not hold the \(parameters.count) trained tensors of this run; resume from a checkpoint of this run")
        }
        let values = try parameters.indices.map { i in try st.tensor("param.\(i)", count: parameters[i].count) }
        withExtendedLifetime(values) {
            for (p, v) in zip(parameters, values) {
                precondition(p.isContiguous, "trained parameters are updated in place")
                p.data.update(from: v.data, count: p.count)
            }
        }
    }
}
