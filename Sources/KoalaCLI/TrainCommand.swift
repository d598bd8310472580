import ArgumentParser
import Foundation
import KoalaImageIO
import KoalaStore
import KoalaTensor
import KoalaTraining

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "DreamBooth-train a subject (LoRA, or the full U-Net) from its photos.",
        discussion: """
            Reads a TOML recipe (see recipes/README.md); --resolution, --max-steps, \
            --learning-rate, --rank and --seed override its keys. The run, its checkpoints \
            (LoRA safetensors in diffusers format, kohya too when the recipe asks; diffusers \
            `unet` folders for model.train = "full") and its \
            progress are recorded in the data directory; `koalabooth generate --subject NAME` \
            then draws with the newest checkpoint. Progress lines read \
            `step I/N loss L (smoothed S) lr R s/step T eta E peak-rss M`. \
            --resume continues the subject's newest unfinished run from its last checkpoint \
            with the recipe it was started with.
            """
    )

    @Argument(help: "The subject to train (see `koalabooth subject list`).")
    var name: String

    @Option(help: ArgumentHelp("The training recipe (TOML).", valueName: "file"))
    var recipe: String?

    @Option(help: ArgumentHelp("The base model: a diffusers SDXL-architecture folder.", valueName: "dir"))
    var model: String?

    @Option(help: "Override data.resolution (pixels).")
    var resolution: Int?

    @Option(help: "Override train.max_steps.")
    var maxSteps: Int?

    @Option(help: "Override optim.learning_rate.")
    var learningRate: Double?

    @Option(help: "Override model.lora.rank.")
    var rank: Int?

    @Option(help: "Override train.seed.")
    var seed: UInt64?

    @Flag(help: "Continue the subject's newest unfinished run from its last checkpoint.")
    var resume = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if !resume {
            guard recipe != nil else { throw ValidationError("give --recipe FILE (for example recipes/tiny.toml)") }
            guard model != nil else { throw ValidationError("give --model DIR, a diffusers model folder (holding model_index.json)") }
        }
    }

    var overrides: RecipeOverrides {
        RecipeOverrides(resolution: resolution, maxSteps: maxSteps, learningRate: learningRate, rank: rank, seed: seed)
    }

    func run() throws {
        let store = try global.openStore()
        let subject = try store.requireSubject(named: name)
        var run: TrainingRun
        let recipe: TrainingRecipe
        var resumeState: URL?
        if resume {
            (run, recipe, resumeState) = try resumable(store, subject)
        } else {
            recipe = try TrainingRecipe.load(path: self.recipe!).applying(overrides)
            let model = self.model!
            try Self.checkModelFolder(model)
            run = try store.createRun(TrainingRun(subjectId: subject.id!, status: .queued, baseModelPath: Self.absolute(model),
                                                  baseModelFingerprint: try Self.fingerprint(model), recipe: recipe.tomlString(),
                                                  totalSteps: recipe.train.maxSteps))
        }
        let runDir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        do {
            run.status = .running
            run.startedAt = run.startedAt ?? Date()
            run.updatedAt = Date()
            run.errorMessage = nil
            try store.updateRun(run)
            let elapsedBefore = run.elapsedSeconds
            let images = try loadImages(store, subject.id!, recipe)
            let what = recipe.model.train == .full ? "full U-Net" : "LoRA rank \(recipe.model.lora.rank)" + (recipe.model.lora.textEncoders ? " (U-Net and text encoders)" : "")
            print("run \(run.id!): \(images.count) photos, \(recipe.train.maxSteps) steps at \(recipe.data.resolution) px, \(what)")
            let trainer = try DreamBoothTrainer(recipe: recipe, modelPath: run.baseModelPath, images: images,
                                                instancePrompt: recipe.data.instancePrompt(token: subject.token, className: subject.classNoun))
            for note in trainer.notes { Output.warn(note) }
            print(String(format: "eval loss %.6f (before)", trainer.evaluationLoss()))
            let began = Date()
            let stop = StopRequest.installed()
            try trainer.train(directory: runDir, resumeFrom: resumeState, progress: { p in
                print(String(format: "step %d/%d loss %.6f (smoothed %.6f) lr %.3g s/step %.3f",
                             p.step, p.totalSteps, p.loss, p.smoothedLoss, p.learningRate, p.secondsPerStep)
                      + " eta \(Output.duration(p.etaSeconds)) peak-rss \(Self.megabytes(p.peakRSSBytes))")
                fflush(nil)
                run.stepsDone = p.step
                run.lastLoss = p.loss
                run.updatedAt = Date()
                run.elapsedSeconds = elapsedBefore + Date().timeIntervalSince(began)
                try store.updateRun(run)
            }, checkpointSaved: { files in
                _ = try store.addCheckpoint(runID: run.id!, step: files.step, kind: files.unet == nil ? .lora : .full, file: files.recordedFile)
                print("checkpoint step \(files.step): \((files.unet ?? files.primaryLoRA).path)")
            }, shouldStop: { stop.requested })
            print(String(format: "eval loss %.6f (after)", trainer.evaluationLoss()))
            run.status = .finished
            run.finishedAt = Date()
            run.updatedAt = Date()
            run.elapsedSeconds = elapsedBefore + Date().timeIntervalSince(began)
            try store.updateRun(run)
            print("run \(run.id!) finished: \(run.stepsDone) steps in \(Output.duration(run.elapsedSeconds))")
        } catch let e as TrainingInterrupted {
            run.status = .interrupted
            run.errorMessage = "\(e)"
            run.updatedAt = Date()
            try? store.updateRun(run)
            Output.note("run \(run.id!) interrupted after step \(e.step) (checkpoint saved); continue with `koalabooth train \(name) --resume`")
            throw ExitCode(130)
        } catch {
            run.status = .failed
            run.errorMessage = "\(error)"
            run.updatedAt = Date()
            try? store.updateRun(run)
            throw error
        }
    }

    /// The subject's newest unfinished run, its recipe and its last resume state.
    private func resumable(_ store: SubjectStore, _ subject: Subject) throws -> (TrainingRun, TrainingRecipe, URL?) {
        guard let run = try store.runs(subjectID: subject.id!).filter({ $0.status != .finished }).max(by: { $0.id! < $1.id! }) else {
            throw CLIError("subject \(name) has no unfinished training run to resume; start one with `koalabooth train \(name) --recipe FILE --model DIR`")
        }
        if recipe != nil || model != nil || overrides != RecipeOverrides() {
            Output.warn("--resume continues run \(run.id!) with its own recipe and model; other options are ignored")
        }
        let recipe = try TrainingRecipe.parse(toml: run.recipe, source: "run \(run.id!) recipe")
        let dir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        let state = DreamBoothTrainer.checkpointStates(in: dir).last
        print(state.map { "resuming run \(run.id!) from step \($0.step)" } ?? "run \(run.id!) has no checkpoint yet; starting it over")
        return (run, recipe, state?.url)
    }

    private func loadImages(_ store: SubjectStore, _ subjectID: Int64, _ recipe: TrainingRecipe) throws -> [TrainingImage] {
        let photos = try store.photos(subjectID: subjectID)
        guard !photos.isEmpty else {
            throw CLIError("subject \(name) has no photos; add some with `koalabooth subject add \(name) PHOTO…`")
        }
        let size = recipe.data.resolution
        var rng = RandomGenerator(seed: recipe.train.seed)
        return try photos.map { photo in
            let image = try RGBImage.load(path: store.url(forRelativePath: photo.path).path)
            let crop = recipe.data.centerCrop ? image.fitAndCrop(to: size, mode: .center)
                : image.fitAndCrop(to: size, mode: .random, using: &rng)
            return TrainingImage(pixels: crop.image.planarFloats(), size: size, originalWidth: crop.originalWidth,
                                 originalHeight: crop.originalHeight, cropX: crop.cropX, cropY: crop.cropY)
        }
    }

    static func checkModelFolder(_ path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw CLIError("--model \(path) is not a folder; give a diffusers model folder (make a tiny one with `koalabooth model init --preset tiny --out DIR`)")
        }
        guard FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent("model_index.json").path) else {
            throw CLIError("--model \(path) has no model_index.json: it is not a diffusers model folder")
        }
    }

    static func absolute(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.path
    }

    /// A hash of the folder's file names, sizes and small config files: enough to tell
    /// that a base model was replaced, without reading gigabytes of weights.
    static func fingerprint(_ path: String) throws -> String {
        let root = URL(fileURLWithPath: path)
        var hasher = KoalaStore.SHA256()
        let files = (FileManager.default.subpaths(atPath: path) ?? []).sorted()
        for rel in files {
            let url = root.appendingPathComponent(rel)
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: url.path),
                  attrs[.type] as? FileAttributeType == .typeRegular else { continue }
            let size = (attrs[.size] as? NSNumber)?.intValue ?? 0
            hasher.update(Data("\(rel):\(size)\n".utf8))
            if rel.hasSuffix(".json") || rel.hasSuffix(".txt") { hasher.update(try Data(contentsOf: url)) }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    static func megabytes(_ bytes: Int) -> String { String(format: "%.0fMB", Double(bytes) / 1_048_576) }
}

/// Set by SIGINT/SIGTERM so the training loop stops at the next step boundary with a
/// checkpoint instead of dying mid-step.
final class StopRequest: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    private var sources: [DispatchSourceSignal] = []

    var requested: Bool { lock.lock(); defer { lock.unlock() }; return flag }

    static func installed() -> StopRequest {
        let r = StopRequest()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [r] in
                r.lock.lock(); r.flag = true; r.lock.unlock()
                Output.note("stopping after this step (interrupt again to wait; kill -9 to abort)")
            }
            source.resume()
            r.sources.append(source)
        }
        return r
    }
}
