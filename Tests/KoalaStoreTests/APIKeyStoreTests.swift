import Foundation
import GRDB
@testable import KoalaStore
import XCTest

/// The v2 schema (API keys and subject owners): an old database upgrades in place, and
/// the key records behave.
final class APIKeyStoreTests: StoreTestCase {
    /// A database as the release before API keys left it: the v1 schema, marked, with a subject.
    func makeVersion1Database() throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let pool = try DatabasePool(path: home.appendingPathComponent(SubjectStore.databaseFileName).path)
        try SubjectStore.migrator.migrate(pool, upTo: "v1")
        try pool.write { db in
            try db.execute(sql: "PRAGMA application_id = \(SubjectStore.applicationID)")
            var s = Subject(name: "rex", token: "sks", classNoun: "dog")
            try s.insert(db)
        }
        try pool.read { db in XCTAssertEqual(try Int.fetchOne(db, sql: "PRAGMA user_version"), 1) }
        try pool.close()
    }

    func testVersion1DatabaseOpensAndUpgrades() throws {
        try makeVersion1Database()
        let store = try SubjectStore(home: home)
        try store.database.read { db in
            XCTAssertEqual(try Int.fetchOne(db, sql: "PRAGMA user_version"), 2)
            XCTAssertEqual(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier"), ["v1", "v2"])
            XCTAssertTrue(try db.tableExists("api_keys"))
            XCTAssertEqual(try db.columns(in: "api_keys").map(\.name), ["id", "name", "secret_sha256", "created_at", "revoked_at"])
            XCTAssertTrue(try db.columns(in: "subject").map(\.name).contains("ownerKeyId"))
            XCTAssertEqual(try db.foreignKeys(on: "subject").map(\.destinationTable), ["api_keys"])
        }
        let rex = try store.requireSubject(named: "rex")
        XCTAssertNil(try store.ownerKeyID(ofSubject: rex.id!), "subjects from before keys have no owner")
        // The upgraded database works as a new one does, and opens again unchanged.
        let key = try store.createAPIKey(name: "app", secretSHA256: String(repeating: "a", count: 64))
        _ = try store.createSubject(name: "fido", token: "sks", classNoun: "dog", photos: try photos(), ownerKeyID: key.id)
        let again = try SubjectStore(home: home)
        XCTAssertEqual(try again.subjectIDs(ownedBy: key.id!), [try again.requireSubject(named: "fido").id!])
        XCTAssertEqual(try again.subjects().map(\.subject.name), ["fido", "rex"])
        let health = try again.checkHealth()
        XCTAssertEqual(health.foreignKeyViolations, 0)
        XCTAssertEqual(health.schemaVersion, 2)
    }

    func testKeysRecordOnlyTheHashAndRevokeOnce() throws {
        let store = try SubjectStore(home: home)
        let a = try store.createAPIKey(name: "alice", secretSHA256: "11")
        _ = try store.createAPIKey(name: "bob", secretSHA256: "22")
        XCTAssertThrowsError(try store.createAPIKey(name: "ALICE", secretSHA256: "33")) { error in
            XCTAssertEqual(error as? APIKeyError, .duplicateName(name: "ALICE"))
        }
        XCTAssertThrowsError(try store.createAPIKey(name: "has space", secretSHA256: "44")) { error in
            guard case .invalidName = error as? APIKeyError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try store.apiKeys().map(\.name), ["alice", "bob"])
        XCTAssertEqual(try store.activeAPIKey(secretSHA256: "11")?.id, a.id)
        XCTAssertNil(try store.activeAPIKey(secretSHA256: "99"))
        XCTAssertEqual(try store.activeAPIKeyCount(), 2)

        let revoked = try store.revokeAPIKey(named: "Alice")
        let first = try XCTUnwrap(revoked.revokedAt)
        XCTAssertNil(try store.activeAPIKey(secretSHA256: "11"), "a revoked key does not authenticate")
        XCTAssertEqual(try store.revokeAPIKey(named: "alice").revokedAt, first, "revoking again keeps the first time")
        XCTAssertEqual(try store.activeAPIKeyCount(), 1)
        XCTAssertThrowsError(try store.revokeAPIKey(named: "carol")) { error in
            XCTAssertEqual(error as? APIKeyError, .unknownKey(name: "carol"))
        }
    }

    func testOwnerIsRecordedWithTheSubjectAndSurvivesChanges() throws {
        let store = try SubjectStore(home: home)
        let key = try store.createAPIKey(name: "app", secretSHA256: "11")
        let (owned, _) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try photos(), ownerKeyID: key.id)
        let (local, _) = try store.createSubject(name: "local", token: "sks", classNoun: "dog", photos: try photos())
        XCTAssertEqual(try store.ownerKeyID(ofSubject: owned.id!), key.id)
        XCTAssertNil(try store.ownerKeyID(ofSubject: local.id!))
        // Record updates (rename, photo changes) write the Subject's columns only.
        try store.renameSubject("rex", to: "rexy")
        try store.removePhoto(try store.photos(subjectID: owned.id!)[0])
        XCTAssertEqual(try store.ownerKeyID(ofSubject: owned.id!), key.id)
        // An owner that is not a key is refused by the foreign key, and nothing is stored.
        XCTAssertThrowsError(try store.createSubject(name: "ghost", token: "sks", classNoun: "dog", photos: try photos(), ownerKeyID: 999))
        XCTAssertNil(try store.subject(named: "ghost"))
    }
}
