import Foundation
import KoalaApp
import KoalaStore
import XCTest

/// API keys (secrets shown once, stored as hashes) and the owner every subject use case
/// takes: a key reaches only what it created.
final class APIKeyUseCasesTests: AppTestCase {
    var keys: APIKeyUseCases { APIKeyUseCases(location: location) }

    func testSecretsAreRandomShownOnceAndStoredAsHashes() throws {
        let a = try keys.create(name: "alice"), b = try keys.create(name: "bob")
        XCTAssertEqual(a.name, "alice")
        for secret in [a.secret, b.secret] {
            XCTAssertTrue(secret.hasPrefix("kb_"), secret)
            XCTAssertEqual(secret.count, 3 + 43, "256 bits in base64url without padding")
            XCTAssertTrue(secret.dropFirst(3).allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }, secret)
        }
        XCTAssertNotEqual(a.secret, b.secret)
        let store = try location.open()
        XCTAssertEqual(try store.apiKeys().first { $0.name == "alice" }?.secretSHA256, SHA256.hex(Data(a.secret.utf8)))
        // Neither the database nor its WAL holds a secret.
        for file in try FileManager.default.contentsOfDirectory(atPath: store.home.path) where file.hasPrefix(SubjectStore.databaseFileName) {
            let bytes = try Data(contentsOf: store.home.appendingPathComponent(file))
            XCTAssertNil(bytes.range(of: Data(a.secret.utf8)), file)
            XCTAssertNil(bytes.range(of: Data(a.secret.dropFirst(3).utf8)), file)
        }
        // Listings carry no secret and no hash.
        let listed = try keys.list()
        XCTAssertEqual(listed.map(\.name), ["alice", "bob"])
        let json = String(decoding: try JSONEncoder().encode(listed), as: UTF8.self)
        XCTAssertFalse(json.contains(a.secret) || json.contains(SHA256.hex(Data(a.secret.utf8))), json)
    }

    func testAuthenticateAndRevoke() throws {
        XCTAssertNil(try keys.authenticate(secret: "kb_anything"), "no data directory, no key")
        XCTAssertEqual(try keys.list(), [])
        XCTAssertFalse(try keys.anyActiveKey())
        let a = try keys.create(name: "alice")
        XCTAssertTrue(try keys.anyActiveKey())
        XCTAssertEqual(try keys.authenticate(secret: a.secret)?.name, "alice")
        XCTAssertNil(try keys.authenticate(secret: a.secret + "x"))
        XCTAssertNil(try keys.authenticate(secret: String(a.secret.dropFirst(3))))
        XCTAssertNil(try keys.authenticate(secret: ""))
        let revoked = try keys.revoke(name: "alice")
        XCTAssertNotNil(revoked.revokedAt)
        XCTAssertNil(try keys.authenticate(secret: a.secret))
        XCTAssertFalse(try keys.anyActiveKey())
        XCTAssertEqual(try keys.list().map(\.revokedAt), [revoked.revokedAt])
        XCTAssertThrowsError(try keys.revoke(name: "nobody")) { XCTAssertEqual($0 as? APIKeyError, .unknownKey(name: "nobody")) }
        XCTAssertThrowsError(try keys.create(name: "alice")) { XCTAssertEqual($0 as? APIKeyError, .duplicateName(name: "alice")) }
        XCTAssertThrowsError(try keys.create(name: "")) { error in
            guard case .invalidName = error as? APIKeyError else { return XCTFail("\(error)") }
        }
    }

    func testEachKeyReachesOnlyItsOwnSubjects() throws {
        _ = try keys.create(name: "alice")
        _ = try keys.create(name: "bob")
        let alice = try XCTUnwrap(try location.open().apiKeys().first { $0.name == "alice" })
        let bob = try XCTUnwrap(try location.open().apiKeys().first { $0.name == "bob" })
        _ = try subjects.create(newSubject("rex", photos: try photos(3)), owner: alice)
        _ = try subjects.create(newSubject("local", photos: try photos(3, prefix: "q")))

        XCTAssertEqual(try subjects.list(owner: alice).map(\.subject.name), ["rex"])
        XCTAssertEqual(try subjects.list(owner: bob).map(\.subject.name), [])
        XCTAssertEqual(try subjects.list().map(\.subject.name), ["local", "rex"], "the command line sees every subject")

        let extra = try photos(1, prefix: "x")
        let refusals: [(String, () throws -> Void)] = [
            ("show", { _ = try self.subjects.show("rex", generations: 0, owner: bob) }),
            ("rename", { _ = try self.subjects.rename("rex", to: "mine", owner: bob) }),
            ("add photos", { _ = try self.subjects.addPhotos(extra, to: "rex", minimumSide: 16, owner: bob) }),
            ("remove a photo", { _ = try self.subjects.removePhoto(of: "rex", matching: "p0.png", allowBelowMinimum: true, owner: bob) }),
            ("preview a deletion", { _ = try self.subjects.deletionPreview("rex", owner: bob) }),
            ("delete", { _ = try self.subjects.delete("rex", owner: bob) }),
            ("show a command-line subject", { _ = try self.subjects.show("local", generations: 0, owner: alice) }),
            ("delete a command-line subject", { _ = try self.subjects.delete("local", owner: alice) }),
        ]
        for (what, attempt) in refusals {
            XCTAssertThrowsError(try attempt(), what) { error in
                guard case .unknownSubject = error as? StoreError else { return XCTFail("\(what): \(error)") }
            }
        }
        XCTAssertEqual(try subjects.show("rex", generations: 0).detail.photos.count, 3, "nothing changed")
        XCTAssertEqual(try subjects.list().map(\.subject.name), ["local", "rex"])

        // The owner does all of it.
        XCTAssertEqual(try subjects.addPhotos(extra, to: "rex", minimumSide: 16, owner: alice).total, 4)
        XCTAssertEqual(try subjects.rename("rex", to: "rexy", owner: alice).name, "rexy")
        XCTAssertEqual(try subjects.removePhoto(of: "rexy", matching: "p0.png", owner: alice).remaining, 3)
        XCTAssertEqual(try subjects.deletionPreview("rexy", owner: alice).photos, 3)
        try subjects.delete("rexy", owner: alice)
        XCTAssertEqual(try subjects.list().map(\.subject.name), ["local"])
    }
}
