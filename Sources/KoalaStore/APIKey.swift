import Foundation
import GRDB

/// A key of the HTTP service: a name for people and the SHA-256 of its secret. The
/// secret itself is shown once when the key is made and never stored, so a copied
/// database gives no access. A revoked key stays (subjects keep naming their owner) but
/// no longer authenticates.
public struct APIKey: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "api_keys"

    public var id: Int64?
    /// Unique (ignoring case); letters, digits, '-' and '_', like subject names.
    public var name: String
    /// Lowercase hex SHA-256 of the whole secret ("kb_…").
    public var secretSHA256: String
    public var createdAt = Date()
    public var revokedAt: Date?

    enum CodingKeys: String, CodingKey {
        case id, name
        case secretSHA256 = "secret_sha256"
        case createdAt = "created_at"
        case revokedAt = "revoked_at"
    }

    public enum Columns: String, ColumnExpression { case name, secretSHA256 = "secret_sha256", revokedAt = "revoked_at" }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    public var isRevoked: Bool { revokedAt != nil }

    /// Checks the naming rules (those of subject names); throws `APIKeyError.invalidName`.
    public static func validate(name: String) throws {
        do {
            try Subject.validate(name: name)
        } catch StoreError.invalidName(_, let reason) {
            throw APIKeyError.invalidName(name: name, reason: reason)
        }
    }
}

/// Why an API key operation failed; nothing was changed.
public enum APIKeyError: Error, Equatable, CustomStringConvertible, LocalizedError {
    case invalidName(name: String, reason: String)
    case duplicateName(name: String)
    case unknownKey(name: String)

    public var description: String {
        switch self {
        case .invalidName(let name, let reason):
            return "invalid API key name '\(name)': \(reason). Use 1-64 letters, digits, '-' and '_', starting with a letter or digit."
        case .duplicateName(let name):
            return "an API key named \(name) already exists (names are compared ignoring case, revoked keys included). Choose another name."
        case .unknownKey(let name):
            return "no API key named \(name)."
        }
    }

    public var errorDescription: String? { description }
}
