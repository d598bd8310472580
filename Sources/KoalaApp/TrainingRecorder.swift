import Foundation
import KoalaDiffusion
import KoalaStore
import KoalaTraining

/// What a training run keeps in the store besides progress: the checkpoints it saves and
/// retires (`checkpoint.keep_last`) and its validation images. Each is reported to the
/// run's events once it is recorded.
final class TrainingRecorder {
    let store: SubjectStore
    let subject: Subject
    let runID: Int64
    let runDirectory: URL
    let modelPath: String
    let keepLast: Int?
    let events: TrainingEventSink
    /// The store ids of this run's checkpoints by step, to link validation images.
    private var checkpointIDs: [Int: Int64] = [:]

    init(store: SubjectStore, subject: Subject, runID: Int64, runDirectory: URL, modelPath: String, keepLast: Int?,
         events: @escaping TrainingEventSink) throws {
        self.store = store
        self.subject = subject
        self.runID = runID
        self.runDirectory = runDirectory
        self.modelPath = modelPath
        self.keepLast = keepLast
        self.events = events
        for c in try store.checkpoints(runID: runID) { checkpointIDs[c.step] = c.id }
        DurableWrite.removeLeftovers(in: validationDirectory)
    }

    var validationDirectory: URL { runDirectory.appendingPathComponent("validation") }

    /// Records a checkpoint the trainer wrote, or confirms the record when `--resume`
    /// redoes the end of its step.
    func checkpointSaved(_ files: TrainingCheckpointFiles) throws {
        let c = try DurableWrite.record("checkpoint row of step \(files.step)") {
            try store.recordCheckpoint(runID: runID, step: files.step, kind: files.unet == nil ? .lora : .full, file: files.recordedFile)
        }
        checkpointIDs[files.step] = c.id
        events(.checkpointSaved(step: files.step, file: files.unet ?? files.primaryLoRA))
    }

    /// Deletes a retired checkpoint's rows, then its files (its resume state last).
    func checkpointExpired(_ old: ExpiredCheckpoint) throws {
        let rows = try store.checkpoints(runID: runID).filter { $0.step == old.step }
        // The resume state last: while it exists, a retirement a crash cut short is redone.
        let files = old.files.filter { !$0.lastPathComponent.hasPrefix("state-") } + old.files.filter { $0.lastPathComponent.hasPrefix("state-") }
        try DurableWrite.record("retiring checkpoint step \(old.step)") { try store.deleteCheckpoints(rows, files: files) }
        checkpointIDs[old.step] = nil
        events(.checkpointRemoved(step: old.step, keepLast: keepLast))
    }

    /// Writes a validation image as a PNG with `generate`'s text chunks (plus run and
    /// step) and records it as a generation of the subject (again, when a resumed run
    /// redraws it: the row of its path is updated).
    func validationImage(_ image: ValidationImage) throws {
        let p = image.parameters
        let url = try ValidationImageFile.write(image, in: validationDirectory, model: modelPath,
                                                loras: try checkpointLoRA(step: image.step).map { [$0] } ?? [],
                                                chunks: ["subject": subject.name, "run": "\(runID)"])
        let generation = Generation(subjectId: subject.id!, runId: runID, checkpointId: checkpointIDs[image.step],
                                    prompt: p.prompt, negativePrompt: p.negativePrompt ?? "", seed: Int64(bitPattern: p.seed),
                                    steps: p.steps, scheduler: p.scheduler.rawValue, guidanceScale: Double(p.guidance),
                                    width: image.width, height: image.height, imagePath: try store.relativePath(of: url))
        _ = try DurableWrite.record("validation row \(image.fileName)") { try store.recordGeneration(generation) }
        events(.validationImage(step: image.step, file: url, prompt: p.prompt))
    }

    /// Whether the validation images of these names are on disk and recorded.
    func validationRecorded(_ names: [String]) -> Bool {
        ValidationImageFile.allWritten(names, in: validationDirectory) && names.allSatisfy { name in
            guard let path = try? store.relativePath(of: validationDirectory.appendingPathComponent(name)) else { return false }
            return (try? store.generation(imagePath: path)) != nil
        }
    }

    /// The LoRA checkpoint saved at `step`, which the validation images of the step were
    /// drawn with, as the `parameters` chunk names it (nil: none saved at that step, or a
    /// full fine-tune).
    private func checkpointLoRA(step: Int) throws -> Infotext.LoRA? {
        guard let c = try store.checkpoints(runID: runID).first(where: { $0.step == step }), c.kind == .lora else { return nil }
        return .file(store.url(forRelativePath: c.path).path, scale: 1)
    }
}
