import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaStore

/// A subject and the checkpoint a generation draws it with: the newest checkpoint of the
/// latest finished run, or of a chosen run.
public struct SubjectCheckpoint: Sendable {
    public let store: SubjectStore
    public let subject: Subject
    public let run: TrainingRun
    public let checkpoint: Checkpoint

    /// Looks the subject (and `runID`) up in the store at `location`.
    public static func resolve(_ name: String, runID: Int64?, in location: StoreLocation) throws -> SubjectCheckpoint {
        guard let store = try location.openExisting() else {
            throw GenerationRequestError.noDataDirectory(subject: name, home: location.home.path)
        }
        let subject = try store.requireSubject(named: name)
        let chosen: (run: TrainingRun, checkpoint: Checkpoint)
        if let runID {
            guard let r = try store.run(id: runID), r.subjectId == subject.id else {
                throw GenerationRequestError.unknownRun(subject: name, runID: runID)
            }
            guard let c = try store.checkpoints(runID: runID).max(by: { $0.step < $1.step }) else {
                throw GenerationRequestError.runHasNoCheckpoint(runID: runID)
            }
            chosen = (r, c)
        } else {
            guard let latest = try store.latestFinishedCheckpoint(subjectID: subject.id!) else {
                throw GenerationRequestError.noFinishedCheckpoint(subject: name)
            }
            chosen = latest
        }
        return SubjectCheckpoint(store: store, subject: subject, run: chosen.run, checkpoint: chosen.checkpoint)
    }

    /// `text` with `{token}` and `{class}` replaced by the subject's.
    public func substitute(_ text: String) -> String {
        text.replacingOccurrences(of: "{token}", with: subject.token).replacingOccurrences(of: "{class}", with: subject.classNoun)
    }

    /// A new image path in the subject's generations folder (created if needed).
    public func defaultOutput() throws -> String {
        let dir = store.generationDirectory(subjectID: subject.id!)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let stamp = Int(Date().timeIntervalSince1970 * 1000)
        return dir.appendingPathComponent("\(stamp).png").path
    }

    /// The checkpoint's weights file.
    public var path: String { store.url(forRelativePath: checkpoint.path).path }

    /// The LoRA checkpoint as the `parameters` chunk names it (nil for a full fine-tune).
    public func infotextLoRA(scale: Float) -> Infotext.LoRA? {
        checkpoint.kind == .lora ? .file(path, scale: scale) : nil
    }

    /// Merges a LoRA checkpoint, or loads a full fine-tune's U-Net weights.
    public func apply(to pipeline: StableDiffusionXLPipeline, scale: Float) throws {
        switch checkpoint.kind {
        case .lora:
            _ = try pipeline.applyLoRA(path: path, scale: scale)
        case .full:
            // The store records the weights file inside the checkpoint's `unet` folder.
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw GenerationRequestError.checkpointMissing(path: path)
            }
            let folder = isDir.boolValue ? URL(fileURLWithPath: path) : URL(fileURLWithPath: path).deletingLastPathComponent()
            let sd = try StateDict.load(directory: folder, weightName: "diffusion_pytorch_model", variant: nil)
            let report = try pipeline.unet.load(keys: sd.keys, sd.tensor)
            guard report.isExact else { throw GenerationRequestError.checkpointMismatch(path: path, report: "\(report)") }
        }
    }

    /// Records an image in the subject's history; nil (not recorded) when `imagePath` is
    /// outside the data directory.
    public func record(_ p: GenerationParameters, width: Int, height: Int, imagePath: String) throws -> Generation? {
        guard let relative = try? store.relativePath(of: URL(fileURLWithPath: imagePath)) else { return nil }
        return try store.recordGeneration(Generation(subjectId: subject.id!, runId: run.id, checkpointId: checkpoint.id,
                                                     prompt: p.prompt, negativePrompt: p.negativePrompt ?? "", seed: Int64(bitPattern: p.seed),
                                                     steps: p.steps, scheduler: p.scheduler.rawValue, guidanceScale: Double(p.guidance),
                                                     width: width, height: height, imagePath: relative))
    }
}
