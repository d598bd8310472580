import Foundation
import GRDB

/// What a checkpoint holds: LoRA adapter weights only, or the full U-Net.
public enum CheckpointKind: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case lora, full
}

/// A weights file saved by a training run at some step.
public struct Checkpoint: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "checkpoint"

    public var id: Int64?
    public var runId: Int64
    public var step: Int
    public var kind: CheckpointKind
    /// Relative to the data directory.
    public var path: String
    public var sha256: String
    public var byteCount: Int
    public var createdAt = Date()

    public enum Columns: String, ColumnExpression { case id, runId, step, kind }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension SubjectStore {
    /// Records a checkpoint file a run has finished writing inside the data directory,
    /// or confirms the record of it: a run resumed after a kill redoes the end of the
    /// checkpoint step it resumes from, and its files may have been written by a step
    /// redone. A row of the same run, step and kind that names this file with these
    /// bytes (hash and size) is returned as it is; one that differs is updated to the
    /// file as it is now. Throws `unknownRun`, `outsideHome`, `fileUnreadable`.
    public func recordCheckpoint(runID: Int64, step: Int, kind: CheckpointKind, file: URL) throws -> Checkpoint {
        let path = try relativePath(of: file)
        let (sha, size) = try SHA256.hexOfFile(atPath: file.path)
        return try write { db in
            guard try TrainingRun.exists(db, key: runID) else { throw StoreError.unknownRun(id: runID) }
            let key = Checkpoint.Columns.runId == runID && Checkpoint.Columns.step == step && Checkpoint.Columns.kind == kind
            guard var c = try Checkpoint.filter(key).fetchOne(db) else {
                var c = Checkpoint(runId: runID, step: step, kind: kind, path: path, sha256: sha, byteCount: size)
                try c.insert(db)
                return try Checkpoint.fetchOne(db, key: c.id!)!
            }
            if (c.path, c.sha256, c.byteCount) != (path, sha, size) {
                (c.path, c.sha256, c.byteCount) = (path, sha, size)
                try c.update(db)
            }
            return c
        }
    }
}
