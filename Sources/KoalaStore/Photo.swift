import Foundation
import GRDB

/// One training photo of a subject, copied into the data directory and named by the
/// SHA-256 of its bytes (a subject holds each picture once).
public struct Photo: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "photo"

    public var id: Int64?
    public var subjectId: Int64
    /// Lowercase hex SHA-256 of the file.
    public var sha256: String
    /// The file name the user imported it from.
    public var originalName: String
    /// Relative to the data directory: `subjects/<id>/photos/<sha256>.<ext>`.
    public var path: String
    public var byteCount: Int
    public var width: Int
    public var height: Int
    public var addedAt = Date()

    public enum Columns: String, ColumnExpression { case id, subjectId, sha256, addedAt }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A photo to import: a file the caller has already decoded and checked (the store
/// does not decode images), with its size in pixels.
public struct PhotoInput: Sendable, Equatable {
    public var sourcePath: String
    public var width: Int
    public var height: Int
    /// Extension for the stored copy, from the detected format ("jpg", "png").
    public var fileExtension: String

    public init(sourcePath: String, width: Int, height: Int, fileExtension: String) {
        self.sourcePath = sourcePath
        self.width = width
        self.height = height
        self.fileExtension = fileExtension
    }
}

/// What an import did: photos stored, and inputs skipped because the subject (or an
/// earlier input) already holds the same bytes.
public struct PhotoImport: Sendable, Equatable {
    public struct Duplicate: Sendable, Equatable {
        public var sourcePath: String
        public var sha256: String
        /// The original name of the photo it duplicates.
        public var sameAs: String
    }

    public var added: [Photo] = []
    public var duplicates: [Duplicate] = []
}
