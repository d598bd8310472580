import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTraining

/// A KOALA distillation (`koalabooth distill`): an SDXL-structured teacher pipeline, the
/// student U-Net to make of it, captioned images and a `[distill]` recipe.
public struct DistillationRequest: Sendable {
    /// The teacher: a diffusers pipeline folder.
    public var teacherPath: String
    /// `koala-700m`, `koala-1b`, or the path of a U-Net config.json.
    public var student: String
    /// A `CaptionedImageFolder`.
    public var dataPath: String
    /// A distillation recipe (TOML file).
    public var recipePath: String
    /// The distilled pipeline folder to write (must not exist).
    public var outPath: String
    /// The last `holdout` images of the data are not trained on: the student's output gap
    /// to the teacher on them is measured before and after (`DistillationEvent.outputGap`).
    public var holdout: Int

    public init(teacherPath: String, student: String, dataPath: String, recipePath: String, outPath: String, holdout: Int = 0) {
        self.teacherPath = teacherPath
        self.student = student
        self.dataPath = dataPath
        self.recipePath = recipePath
        self.outPath = outPath
        self.holdout = holdout
    }

    /// Where the run keeps its recipe, student config and checkpoints: `<out>.run/`, beside
    /// the output, so that a killed run resumes from it and the output appears whole.
    public var runDirectory: URL { URL(fileURLWithPath: outPath + ".run") }
}

/// What a distillation reports as it goes.
public enum DistillationEvent: Sendable {
    /// From the checkpoint of `step`; nil: the run had none yet and starts over.
    case resuming(step: Int?)
    /// The teacher pipeline loaded and the student initialised from it.
    case models(teacherParameters: Int, studentParameters: Int, precision: Precision)
    case encoded(done: Int, total: Int)
    case optimizerLoopStarting
    case step(DistillationProgress)
    case checkpointSaved(step: Int, folder: URL)
    /// A `[validation]` image drawn with the student as it is after `step`.
    case validationImage(step: Int, file: URL, prompt: String)
    case finished(out: URL, steps: Int, seconds: Double)
    /// `DistillationTrainer.relativeOutputMSE` on the held-out images, before training
    /// (or resuming) and after.
    case outputGap(before: Double, after: Double, images: Int, samples: Int)
    case interrupted(step: Int)
}

public typealias DistillationEventSink = (DistillationEvent) -> Void

/// Why a distillation cannot start.
public enum DistillationError: Error, Equatable, CustomStringConvertible {
    case outputExists(path: String)
    case nothingToResume(runDirectory: String)
    case runExists(runDirectory: String)
    case teacherMissing(path: String)
    case holdoutTooLarge(holdout: Int, images: Int)

    public var description: String {
        switch self {
        case .outputExists(let path): "\(path) already exists; choose a new output folder or remove it"
        case .nothingToResume(let dir): "\(dir) holds no distillation run to resume; start one without resuming"
        case .runExists(let dir): "\(dir) holds a started distillation run; resume it, or remove the folder to start over"
        case .teacherMissing(let path): "the teacher \(path) is not a diffusers pipeline folder (no model_index.json)"
        case .holdoutTooLarge(let n, let images): "\(n) held-out images leave none of the \(images) to train on; hold out fewer"
        }
    }
}

/// How a distillation ended without an error.
public enum DistillationOutcome: Sendable, Equatable {
    case finished(URL)
    case interrupted(step: Int)
}

/// Runs a distillation: the student initialised from the teacher (KOALA's rule,
/// `StudentInitialization`), the data encoded once by the teacher's VAE and text
/// encoders, `DistillationTrainer` to the recipe's steps with checkpoints in the run
/// folder, then the distilled pipeline written whole: the teacher's text encoders,
/// tokenizers, VAE and scheduler with the student U-Net.
public struct DistillationRunner: Sendable {
    public init() {}

    static let recipeFile = "recipe.toml", studentFile = "student.json"

    public func run(_ request: DistillationRequest, resume: Bool, cancellation: TrainingCancellation = TrainingCancellation(),
                    events: DistillationEventSink = { _ in }) throws -> DistillationOutcome {
        let fm = FileManager.default
        let out = URL(fileURLWithPath: request.outPath), runDir = request.runDirectory
        guard !fm.fileExists(atPath: out.path) else { throw DistillationError.outputExists(path: out.path) }
        guard fm.fileExists(atPath: URL(fileURLWithPath: request.teacherPath).appendingPathComponent("model_index.json").path) else {
            throw DistillationError.teacherMissing(path: request.teacherPath)
        }
        let folder = try CaptionedImageFolder(path: request.dataPath)
        guard request.holdout < folder.items.count else {
            throw DistillationError.holdoutTooLarge(holdout: request.holdout, images: folder.items.count)
        }
        // What a killed run left half-written of the run folder or the output.
        DurableWrite.removeLeftovers(of: runDir)
        DurableWrite.removeLeftovers(of: out)
        let validationDir = runDir.appendingPathComponent("validation")
        DurableWrite.removeLeftovers(in: validationDir)
        let recipeURL = runDir.appendingPathComponent(Self.recipeFile), studentURL = runDir.appendingPathComponent(Self.studentFile)
        let resumeFrom: URL?
        if resume {
            guard fm.fileExists(atPath: recipeURL.path), fm.fileExists(atPath: studentURL.path) else {
                throw DistillationError.nothingToResume(runDirectory: runDir.path)
            }
            // Stopped before its first checkpoint: it starts over, with its recipe.
            let last = DreamBoothTrainer.checkpointStates(in: runDir).last
            resumeFrom = last?.url
            events(.resuming(step: last?.step))
        } else {
            guard !fm.fileExists(atPath: runDir.path) else { throw DistillationError.runExists(runDirectory: runDir.path) }
            // Checked before anything is written.
            let recipeText = try String(contentsOfFile: request.recipePath, encoding: .utf8)
            _ = try DistillationRecipe.parse(toml: recipeText, source: request.recipePath)
            let config = try StudentInitialization.config(named: request.student)
            try DurableWrite.file(runDir) { tmp in
                try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
                try recipeText.write(to: tmp.appendingPathComponent(Self.recipeFile), atomically: false, encoding: .utf8)
                try Self.json(config).write(to: tmp.appendingPathComponent(Self.studentFile))
            }
            resumeFrom = nil
        }
        // A run continues with the recipe and student it was started with.
        let recipe = try DistillationRecipe.load(path: recipeURL.path)
        let studentConfigJSON = try Data(contentsOf: studentURL)
        let studentConfig = try StudentInitialization.config(named: studentURL.path)

        Precision.compute = recipe.training.model.precision.resolved()
        let heldOut: [DistillationExample]
        let trainer: DistillationTrainer
        do {
            let pipeline = try StableDiffusionXLPipeline.load(from: request.teacherPath)
            let student = try StudentInitialization.student(studentConfig, from: pipeline.unet)
            events(.models(teacherParameters: pipeline.unet.parameterCount, studentParameters: student.parameterCount,
                           precision: Precision.compute))
            let all = try DistillationExample.encode(folder, data: recipe.training.data, seed: recipe.training.train.seed,
                                                     pipeline: pipeline) { events(.encoded(done: $0, total: folder.items.count)) }
            let examples = Array(all.dropLast(request.holdout))
            heldOut = Array(all.suffix(request.holdout))
            let v = recipe.training.validation
            let validator = v.prompts.isEmpty ? nil
                : try ValidationSampler(recipe: recipe.training, texts: ValidationTexts(prompts: v.prompts, negativePrompt: v.negativePrompt),
                                        pipeline: pipeline)
            // The teacher only runs forward: bf16 where the run computes in it.
            if Precision.compute == .bf16 { _ = pipeline.unet.holdFrozenGEMMWeightsInBF16() }
            trainer = try DistillationTrainer(recipe: recipe, student: student, studentConfigJSON: studentConfigJSON,
                                              teacher: pipeline.unet, noiseSchedule: NoiseSchedule(config: pipeline.schedulerConfig),
                                              predictionType: recipe.training.train.predictionType ?? pipeline.schedulerConfig.predictionType,
                                              examples: examples, validator: validator)
        }  // the VAE encoder and text encoders are released here: only the two U-Nets train
        let samples = 4 * max(request.holdout, 4)
        let gapBefore = heldOut.isEmpty ? nil : trainer.relativeOutputMSE(on: heldOut, count: samples)
        events(.optimizerLoopStarting)
        let began = Date()
        let state: TrainingCheckpointState
        do {
            state = try trainer.train(directory: runDir, resumeFrom: resumeFrom,
                                      progress: { events(.step($0)) },
                                      checkpointSaved: { files in events(.checkpointSaved(step: files.step, folder: files.unet!)) },
                                      validationImage: { image in
                                          // Redrawn by the teacher's pipeline with the student's U-Net of that step.
                                          let unet = runDir.appendingPathComponent(FullUNetWeights.folderName(CheckpointName(step: image.step).tag))
                                          let file = try ValidationImageFile.write(image, in: validationDir, model: request.teacherPath,
                                                                                   chunks: ["unet": unet.path])
                                          events(.validationImage(step: image.step, file: file, prompt: image.parameters.prompt))
                                      },
                                      validationRecorded: { ValidationImageFile.allWritten($0, in: validationDir) },
                                      shouldStop: { cancellation.isCancelled })
        } catch let stop as TrainingInterrupted {
            events(.interrupted(step: stop.step))
            return .interrupted(step: stop.step)
        }
        try Self.writePipeline(teacher: URL(fileURLWithPath: request.teacherPath),
                               unet: runDir.appendingPathComponent(state.unetFolder!), to: out)
        let seconds = Date().timeIntervalSince(began)
        if let gapBefore {
            events(.outputGap(before: gapBefore, after: trainer.relativeOutputMSE(on: heldOut, count: samples),
                              images: heldOut.count, samples: samples))
        }
        events(.finished(out: out, steps: state.step, seconds: seconds))
        return .finished(out)
    }

    /// The distilled pipeline folder: every component of the teacher's folder but its
    /// U-Net (hard-linked where the file system allows, else copied), and `unet/` from the
    /// student's checkpoint; built under a temporary name and renamed into place.
    static func writePipeline(teacher: URL, unet: URL, to out: URL) throws {
        let fm = FileManager.default
        try DurableWrite.file(out) { tmp in
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
            for name in try fm.contentsOfDirectory(atPath: teacher.path) where name != "unet" && !name.hasPrefix(".") {
                try linkOrCopy(teacher.appendingPathComponent(name), to: tmp.appendingPathComponent(name))
            }
            try fm.copyItem(at: unet, to: tmp.appendingPathComponent("unet"))
        }
    }

    private static func linkOrCopy(_ source: URL, to target: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        _ = fm.fileExists(atPath: source.path, isDirectory: &isDir)
        if isDir.boolValue {
            try fm.createDirectory(at: target, withIntermediateDirectories: false)
            for name in try fm.contentsOfDirectory(atPath: source.path) {
                try linkOrCopy(source.appendingPathComponent(name), to: target.appendingPathComponent(name))
            }
        } else if (try? fm.linkItem(at: source, to: target)) == nil {
            try fm.copyItem(at: source, to: target)
        }
    }

    private static func json(_ config: UNet2DConditionConfig) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(config)
    }
}
