import Foundation
import GRDB

/// One generated image and everything needed to make it again.
public struct Generation: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "generation"

    public var id: Int64?
    public var subjectId: Int64
    /// The run whose weights were used; nil for the base model (or a deleted run).
    public var runId: Int64?
    public var checkpointId: Int64?
    /// The prompt after `{token}`/`{class}` substitution.
    public var prompt: String
    public var negativePrompt: String
    public var seed: Int64
    public var steps: Int
    public var scheduler: String
    public var guidanceScale: Double
    public var width: Int
    public var height: Int
    /// Relative to the data directory.
    public var imagePath: String
    public var createdAt: Date

    public init(id: Int64? = nil, subjectId: Int64, runId: Int64? = nil, checkpointId: Int64? = nil,
                prompt: String, negativePrompt: String = "", seed: Int64, steps: Int, scheduler: String,
                guidanceScale: Double, width: Int, height: Int, imagePath: String, createdAt: Date = Date()) {
        self.id = id
        self.subjectId = subjectId
        self.runId = runId
        self.checkpointId = checkpointId
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.seed = seed
        self.steps = steps
        self.scheduler = scheduler
        self.guidanceScale = guidanceScale
        self.width = width
        self.height = height
        self.imagePath = imagePath
        self.createdAt = createdAt
    }

    public enum Columns: String, ColumnExpression { case id, subjectId, createdAt, imagePath }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension SubjectStore {
    /// Records a generated image (already written inside the data directory), keyed by
    /// its path: an image written again at a recorded path (a validation image of a step
    /// that a resumed run redoes) updates that row, keeping its id and creation time,
    /// instead of failing.
    public func recordGeneration(_ generation: Generation) throws -> Generation {
        try write { db in
            var g = generation
            if let old = try Generation.filter(Generation.Columns.imagePath == g.imagePath).fetchOne(db) {
                (g.id, g.createdAt) = (old.id, old.createdAt)
                if g != old { try g.update(db) }
                return g
            }
            g.id = nil
            try g.insert(db)
            return try Generation.fetchOne(db, key: g.id!)!
        }
    }

    /// The generation recorded for an image path (relative to the data directory).
    public func generation(imagePath: String) throws -> Generation? {
        try database.read { db in try Generation.filter(Generation.Columns.imagePath == imagePath).fetchOne(db) }
    }
}
