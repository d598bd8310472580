import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaStore
import KoalaTraining

/// What a new training run starts from.
public struct TrainingRequest {
    /// Where the recipe comes from.
    public enum Recipe {
        /// A TOML file (`TrainingRecipe.load`).
        case file(String)
        case recipe(TrainingRecipe)
    }

    public var subject: String
    public var recipe: Recipe
    /// Applied to the recipe before it is recorded with the run.
    public var overrides: RecipeOverrides
    /// The base model: a diffusers SDXL-architecture folder (recorded with the run).
    public var modelPath: String
    /// The pipeline of `modelPath`, already loaded; nil loads it. The trainer takes it
    /// over (`DreamBoothTrainer.init(recipe:pipeline:…)`): give each run its own.
    public var pipeline: StableDiffusionXLPipeline?

    public init(subject: String, recipe: Recipe, overrides: RecipeOverrides = RecipeOverrides(), modelPath: String,
                pipeline: StableDiffusionXLPipeline? = nil) {
        self.subject = subject
        self.recipe = recipe
        self.overrides = overrides
        self.modelPath = modelPath
        self.pipeline = pipeline
    }
}

/// How a run ended without an error (an error is thrown, after the run is marked failed).
public enum TrainingOutcome: Sendable {
    case finished(TrainingRun)
    /// Stopped on request after `step`, with a checkpoint of it.
    case interrupted(TrainingRun, step: Int)

    public var run: TrainingRun {
        switch self {
        case .finished(let r), .interrupted(let r, _): r
        }
    }
}

/// The training use case: starts a subject's run, or resumes its newest unfinished one,
/// and carries it through its whole life in the store.
///
/// A run holds the subject's training lock while it trains (a second run or a delete of
/// the subject is refused), marks runs that dead processes left unfinished as
/// `interrupted`, is recorded `queued`, then `running`, then `finished`, `interrupted`
/// (on `cancellation`) or `failed` (with the error's text), with its steps, last loss
/// and training time summed over resumptions; its checkpoints, their retirement and its
/// validation images are recorded as they are written. Every store write goes through
/// `DurableWrite`, so a process killed at any write leaves a run that a resume finishes
/// with the uninterrupted run's result.
public struct TrainingRunner: Sendable {
    public let store: SubjectStore

    public init(store: SubjectStore) { self.store = store }

    /// Records and trains a new run of `request.subject`.
    public func start(_ request: TrainingRequest, cancellation: TrainingCancellation = TrainingCancellation(),
                      events: @escaping TrainingEventSink) throws -> TrainingOutcome {
        try train(subjectName: request.subject, pipeline: request.pipeline, cancellation: cancellation, events: events) { subject in
            // `auto` resolved here, so the run records the precision it trains in (and a resume keeps it).
            let recipe = try Self.recipe(request.recipe).applying(request.overrides).resolvingPrecision()
            try Self.checkModelFolder(request.modelPath)
            let new = TrainingRun(subjectId: subject.id!, status: .queued, baseModelPath: Self.absolute(request.modelPath),
                                  baseModelFingerprint: try ModelFingerprint.of(folder: request.modelPath),
                                  recipe: recipe.tomlString(), totalSteps: recipe.train.maxSteps)
            let run = try DurableWrite.record("new run") { try store.createRun(new) }
            return (run, recipe, nil)
        }
    }

    /// Continues the subject's newest unfinished run from its last checkpoint, with the
    /// recipe and base model it was started with (`pipeline`: that model, already loaded).
    public func resume(subject name: String, pipeline: StableDiffusionXLPipeline? = nil,
                       cancellation: TrainingCancellation = TrainingCancellation(),
                       events: @escaping TrainingEventSink) throws -> TrainingOutcome {
        try train(subjectName: name, pipeline: pipeline, cancellation: cancellation, events: events) { subject in
            guard var run = try Self.resumableRun(of: subject, in: store) else { throw TrainingRunError.nothingToResume(subject: name) }
            let recipe = try TrainingRecipe.parse(toml: run.recipe, source: "run \(run.id!) recipe")
            let state = DreamBoothTrainer.checkpointStates(in: store.runDirectory(subjectID: subject.id!, runID: run.id!)).last
            events(.resuming(runID: run.id!, fromStep: state?.step))
            run.stepsDone = state?.step ?? 0
            return (run, recipe, state?.url)
        }
    }

    /// The subject's newest run that did not finish: the one `resume` continues.
    public static func resumableRun(of subject: Subject, in store: SubjectStore) throws -> TrainingRun? {
        try store.runs(subjectID: subject.id!).filter { $0.status != .finished }.max { $0.id! < $1.id! }
    }

    /// The lifecycle around the trainer. `prepare` finds or records the run (under the
    /// lock, after abandoned runs are marked) and gives its recipe and resume state.
    private func train(subjectName name: String, pipeline: StableDiffusionXLPipeline?, cancellation: TrainingCancellation,
                       events: @escaping TrainingEventSink,
                       prepare: (Subject) throws -> (run: TrainingRun, recipe: TrainingRecipe, resumeFrom: URL?)) throws -> TrainingOutcome {
        let subject = try store.requireSubject(named: name)
        // Held until the run ends: `subject delete` and a second `train` of it refuse meanwhile.
        let lock = try TrainingLock.acquire(subject: subject, in: store, attempted: "train")
        defer { lock.release() }
        guard try store.subject(id: subject.id!) != nil else { throw StoreError.unknownSubject(name: name) }
        // Runs a killed or crashed process left `running` are marked interrupted, with why.
        for r in try store.markAbandonedRuns(holding: lock) {
            events(.abandonedRunMarked(runID: r.id!, stepsDone: r.stepsDone))
        }
        let prepared = try prepare(subject)
        var run = prepared.run
        let recipe = prepared.recipe
        lock.setRun(run.id!)
        let runDir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        do {
            run.status = .running
            run.startedAt = run.startedAt ?? Date()
            run.updatedAt = Date()
            run.errorMessage = nil
            try save(run, "run status running")
            let elapsedBefore = run.elapsedSeconds
            let images = try loadImages(subject, recipe, modelPath: run.baseModelPath)
            let l = recipe.model.lora
            events(.started(TrainingRunStart(
                runID: run.id!, photoCount: images.count, totalSteps: recipe.train.maxSteps, resolution: recipe.data.resolution,
                trained: recipe.model.train == .full ? "full U-Net" : "LoRA rank \(l.rank)" + (l.textEncoders ? " (U-Net and text encoders)" : ""),
                buckets: DreamBoothDataset.summary(images))))
            let instancePrompt = recipe.data.instancePrompt(token: subject.token, className: subject.classNoun)
            let classImages = recipe.prior.enabled ? classImageRequest(subject, recipe, run, events) : nil
            let validation = ValidationTexts(recipe.validation, token: subject.token, className: subject.classNoun)
            let trainer = try pipeline.map {
                try DreamBoothTrainer(recipe: recipe, pipeline: $0, images: images, instancePrompt: instancePrompt,
                                      classImages: classImages, validation: validation)
            } ?? DreamBoothTrainer(recipe: recipe, modelPath: run.baseModelPath, images: images, instancePrompt: instancePrompt,
                                   classImages: classImages, validation: validation)
            let recorder = try TrainingRecorder(store: store, subject: subject, runID: run.id!, runDirectory: runDir,
                                                modelPath: run.baseModelPath, keepLast: recipe.checkpoint.keepLast, events: events)
            for note in trainer.notes { events(.warning(note)) }
            events(.evaluationLoss(trainer.evaluationLoss(), afterTraining: false))
            let began = Date()
            events(.optimizerLoopStarting)
            try trainer.train(directory: runDir, resumeFrom: prepared.resumeFrom, progress: { p in
                events(.step(p))
                run.stepsDone = p.step
                run.lastLoss = p.loss
                run.updatedAt = Date()
                run.elapsedSeconds = elapsedBefore + Date().timeIntervalSince(began)
                try save(run, "progress of step \(p.step)")
            }, checkpointSaved: recorder.checkpointSaved, checkpointExpired: recorder.checkpointExpired,
               validationImage: recorder.validationImage, validationRecorded: recorder.validationRecorded,
               shouldStop: { cancellation.isCancelled })
            events(.evaluationLoss(trainer.evaluationLoss(), afterTraining: true))
            run.status = .finished
            run.finishedAt = Date()
            run.updatedAt = Date()
            run.elapsedSeconds = elapsedBefore + Date().timeIntervalSince(began)
            try save(run, "run status finished")
            events(.finished(runID: run.id!, steps: run.stepsDone, elapsedSeconds: run.elapsedSeconds))
            return .finished(run)
        } catch let e as TrainingInterrupted {
            run.status = .interrupted
            run.errorMessage = "\(e)"
            run.updatedAt = Date()
            try? save(run, "run status interrupted")
            events(.interrupted(runID: run.id!, step: e.step))
            return .interrupted(run, step: e.step)
        } catch {
            run.status = .failed
            run.errorMessage = "\(error)"
            run.updatedAt = Date()
            // On a full disk this may fail too; the run is then marked interrupted when
            // runs are next listed or trained (`markAbandonedRuns`).
            try? save(run, "run status failed")
            events(.failed(runID: run.id!, message: "\(error)"))
            throw error
        }
    }

    private func save(_ run: TrainingRun, _ what: String) throws {
        try DurableWrite.record(what) { try store.updateRun(run) }
    }

    private static func recipe(_ source: TrainingRequest.Recipe) throws -> TrainingRecipe {
        switch source {
        case .file(let path): try TrainingRecipe.load(path: path)
        case .recipe(let r): r
        }
    }

    private func loadImages(_ subject: Subject, _ recipe: TrainingRecipe, modelPath: String) throws -> [TrainingImage] {
        let photos = try store.photos(subjectID: subject.id!)
        guard !photos.isEmpty else { throw TrainingRunError.noPhotos(subject: subject.name) }
        let images = try photos.map { try RGBImage.load(path: store.url(forRelativePath: $0.path).path) }
        return try DreamBoothDataset.prepare(images, data: recipe.data, seed: recipe.train.seed,
                                             pixelMultiple: DreamBoothDataset.pixelMultiple(modelPath: modelPath))
    }

    /// Prior preservation's class-image cache, shared by the subject's runs:
    /// `subjects/<id>/class-images/<key>/` (`classImageKey`).
    private func classImageRequest(_ subject: Subject, _ recipe: TrainingRecipe, _ run: TrainingRun,
                                   _ events: @escaping TrainingEventSink) -> ClassImageRequest {
        let prompt = recipe.prior.classPrompt(className: subject.classNoun)
        let key = Self.classImageKey(fingerprint: run.baseModelFingerprint, prompt: prompt, resolution: recipe.data.resolution)
        let dir = store.subjectDirectory(subjectID: subject.id!).appendingPathComponent("class-images/\(key)")
        events(.classImages(directory: dir, wanted: recipe.prior.numClassImages, prompt: prompt))
        return ClassImageRequest(directory: dir, prompt: prompt) { events(.classImageGenerated($0)) }
    }

    /// The class-image cache folder's name: a hash of the base model's fingerprint, the
    /// class prompt and `data.resolution`, which decide what the images look like.
    public static func classImageKey(fingerprint: String, prompt: String, resolution: Int) -> String {
        var hasher = KoalaStore.SHA256()
        hasher.update(Data("\(fingerprint)\n\(prompt)\n\(resolution)".utf8))
        return hasher.finalize().prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// Throws unless `path` is a folder holding `model_index.json`.
    public static func checkModelFolder(_ path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw TrainingRunError.modelFolderMissing(path: path)
        }
        guard FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent("model_index.json").path) else {
            throw TrainingRunError.notADiffusersFolder(path: path)
        }
    }

    static func absolute(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.path
    }
}
