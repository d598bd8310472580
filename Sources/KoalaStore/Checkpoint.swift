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
    public var createdAt: Date

    public init(id: Int64? = nil, runId: Int64, step: Int, kind: CheckpointKind, path: String,
                sha256: String, byteCount: Int, createdAt: Date = Date()) {
        self.id = id
        self.runId = runId
        self.step = step
        self.kind = kind
        self.path = path
        self.sha256 = sha256
        self.byteCount = byteCount
        self.createdAt = createdAt
    }

    public enum Columns {
        public static let id = Column(CodingKeys.id)
        public static let runId = Column(CodingKeys.runId)
        public static let step = Column(CodingKeys.step)
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}
