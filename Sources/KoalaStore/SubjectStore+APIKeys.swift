import Foundation
import GRDB

/// Which API key made a subject: the `subject.ownerKeyId` column, NULL for subjects made
/// on the command line. The `Subject` record does not carry it, so reading and writing
/// subjects elsewhere leaves it alone.
public enum SubjectOwnership {
    static let column = "ownerKeyId"

    static func set(_ db: Database, subjectID: Int64, keyID: Int64) throws {
        try db.execute(sql: "UPDATE subject SET \(column) = ? WHERE id = ?", arguments: [keyID, subjectID])
    }
}

extension SubjectStore {
    /// Records a new key; throws `APIKeyError.invalidName` or `.duplicateName`.
    public func createAPIKey(name: String, secretSHA256: String) throws -> APIKey {
        try APIKey.validate(name: name)
        return try write { db in
            if try APIKey.filter(APIKey.Columns.name.collating(.nocase) == name).fetchCount(db) > 0 {
                throw APIKeyError.duplicateName(name: name)
            }
            var key = APIKey(name: name, secretSHA256: secretSHA256)
            try key.insert(db)
            return try APIKey.fetchOne(db, key: key.id!)!
        }
    }

    /// Every key, revoked ones included, by name.
    public func apiKeys() throws -> [APIKey] {
        try database.read { db in try APIKey.order(APIKey.Columns.name.collating(.nocase)).fetchAll(db) }
    }

    /// Revokes the key called `name` (ignoring case); a revoked key keeps the time it was
    /// first revoked. Throws `APIKeyError.unknownKey`.
    @discardableResult
    public func revokeAPIKey(named name: String) throws -> APIKey {
        try write { db in
            guard var key = try APIKey.filter(APIKey.Columns.name.collating(.nocase) == name).fetchOne(db) else {
                throw APIKeyError.unknownKey(name: name)
            }
            if key.revokedAt == nil {
                key.revokedAt = Date()
                try key.update(db)
            }
            return try APIKey.fetchOne(db, key: key.id!)!
        }
    }

    /// The unrevoked key whose secret hashes to `secretSHA256`, or nil.
    public func activeAPIKey(secretSHA256: String) throws -> APIKey? {
        try database.read { db in
            try APIKey.filter(APIKey.Columns.secretSHA256 == secretSHA256 && APIKey.Columns.revokedAt == nil).fetchOne(db)
        }
    }

    /// How many keys are not revoked.
    public func activeAPIKeyCount() throws -> Int {
        try database.read { db in try APIKey.filter(APIKey.Columns.revokedAt == nil).fetchCount(db) }
    }

    /// The id of the key that made subject `subjectID`, or nil when the command line made
    /// it (or there is no such subject).
    public func ownerKeyID(ofSubject subjectID: Int64) throws -> Int64? {
        try database.read { db in
            try Int64.fetchOne(db, sql: "SELECT \(SubjectOwnership.column) FROM subject WHERE id = ?", arguments: [subjectID])
        }
    }

    /// The ids of the subjects key `keyID` made.
    public func subjectIDs(ownedBy keyID: Int64) throws -> Set<Int64> {
        try database.read { db in
            Set(try Int64.fetchAll(db, sql: "SELECT id FROM subject WHERE \(SubjectOwnership.column) = ?", arguments: [keyID]))
        }
    }

    /// A new staging folder under `tmp/` for files a caller writes before importing them
    /// (an upload's photos); a later start removes it if this process dies (`Leftovers`).
    public func makeStagingDirectory() throws -> URL { try makeTemporaryDirectory("stage") }
}
