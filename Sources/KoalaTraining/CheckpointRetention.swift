import Foundation

/// A checkpoint that `checkpoint.keep_last` retires: its step and every file and folder
/// of it in the run folder (LoRA files, kohya files, optimizer and resume state, a full
/// fine-tune's U-Net folder).
public struct ExpiredCheckpoint: Sendable, Equatable {
    public let step: Int
    public let files: [URL]
}

/// `checkpoint.keep_last`: which checkpoints of a run folder to remove.
public enum CheckpointRetention {
    /// The checkpoints in `directory` older than its newest `keep`, oldest first. A
    /// checkpoint is known by its resume state (`state-stepNNNNNN.json`), which every
    /// checkpoint has; the newest is never among them.
    public static func expired(in directory: URL, keep: Int) -> [ExpiredCheckpoint] {
        precondition(keep >= 1, "keep_last must be at least 1")
        return DreamBoothTrainer.checkpointStates(in: directory).dropLast(keep).map { s in
            ExpiredCheckpoint(step: s.step, files: files(ofStep: s.step, in: directory))
        }
    }

    /// The entries directly in `directory` that belong to the checkpoint of `step`:
    /// named `<name>-stepNNNNNN` or `<name>-stepNNNNNN.<extensions>` (files or folders).
    /// Validation images live in a subfolder and are not among them.
    public static func files(ofStep step: Int, in directory: URL) -> [URL] {
        let checkpoint = CheckpointName(step: step)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().filter(checkpoint.names).map { directory.appendingPathComponent($0) }
    }

    /// Deletes the checkpoint's files (what a run without a store does).
    public static func deleteFiles(_ checkpoint: ExpiredCheckpoint) throws {
        for url in checkpoint.files where FileManager.default.fileExists(atPath: url.path) {
            try FileManager.default.removeItem(at: url)
        }
    }
}
