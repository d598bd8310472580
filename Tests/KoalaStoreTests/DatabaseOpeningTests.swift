import Foundation
import GRDB
@testable import KoalaStore
import XCTest

/// Which database files the store opens, creates or refuses (issue 13, items 9 and 10).
final class DatabaseOpeningTests: StoreTestCase {
    var databaseURL: URL { home.appendingPathComponent(SubjectStore.databaseFileName) }

    /// A data directory holding subject rex, its store closed (so no -wal file is left).
    func makeSubject() throws {
        let store = try SubjectStore(home: home)
        _ = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try photos())
    }

    func hash(_ url: URL) throws -> String { try SHA256.hexOfFile(atPath: url.path).hex }

    func testZeroByteOrMissingDatabaseBesideSubjectsIsRefused() throws {
        try makeSubject()
        let photoFiles = try FileManager.default.subpathsOfDirectory(atPath: home.appendingPathComponent("subjects").path).sorted()
        try Data().write(to: databaseURL)
        XCTAssertThrowsError(try SubjectStore(home: home)) { error in
            XCTAssertEqual(error as? StoreError, .databaseMissing(path: databaseURL.path, empty: true, subjectFolders: 1))
            let text = "\(error)"
            // The CLI's wording (--home / KOALABOOTH_HOME) is asserted in ErrorWordingTests.
            for words in [databaseURL.path, "empty", "Restore", "backup", "another data directory"] { XCTAssertTrue(text.contains(words), text) }
        }
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: databaseURL.path)[.size] as? Int, 0, "the empty file must stay as it was")
        try FileManager.default.removeItem(at: databaseURL)
        XCTAssertThrowsError(try SubjectStore(home: home)) { error in
            XCTAssertEqual(error as? StoreError, .databaseMissing(path: databaseURL.path, empty: false, subjectFolders: 1))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: databaseURL.path), "no new database may be made")
        XCTAssertEqual(try FileManager.default.subpathsOfDirectory(atPath: home.appendingPathComponent("subjects").path).sorted(), photoFiles)
    }

    func testZeroByteDatabaseInAnEmptyDirectoryIsInitialised() throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        try Data().write(to: databaseURL)
        let store = try SubjectStore(home: home)
        XCTAssertEqual(try store.subjects().count, 0)
        try store.database.read { db in
            XCTAssertEqual(try Int64.fetchOne(db, sql: "PRAGMA application_id"), Int64(SubjectStore.applicationID))
        }
    }

    func testAnotherProgramsDatabaseIsRefusedUnchanged() throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let foreign = try DatabaseQueue(path: databaseURL.path)
        try foreign.write { db in
            try db.execute(sql: "CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")
            try db.execute(sql: "INSERT INTO note (text) VALUES ('keep me')")
        }
        try foreign.close()
        let before = try hash(databaseURL)
        XCTAssertThrowsError(try SubjectStore(home: home)) { error in
            guard case .notKoalaBoothDatabase(let path, let reason) = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, databaseURL.path)
            XCTAssertTrue(reason.contains("note"), reason)
            XCTAssertTrue("\(error)".contains("a KoalaBooth data directory or a new one"), "\(error)")
        }
        XCTAssertEqual(try hash(databaseURL), before, "a foreign database must not be changed (not even switched to WAL)")

        // Another program's application id, even with no tables.
        try FileManager.default.removeItem(at: databaseURL)
        let stamped = try DatabaseQueue(path: databaseURL.path)
        try stamped.write { db in try db.execute(sql: "PRAGMA application_id = 1234567") }
        try stamped.close()
        XCTAssertThrowsError(try SubjectStore(home: home)) { error in
            guard case .notKoalaBoothDatabase(_, let reason) = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("application id"), reason)
        }
    }

    /// Databases made before the application id was set are KoalaBooth's by their
    /// migrations; opening one marks it.
    func testUnmarkedKoalaBoothDatabaseStillOpensAndIsMarked() throws {
        try makeSubject()
        let queue = try DatabaseQueue(path: databaseURL.path)
        try queue.write { db in try db.execute(sql: "PRAGMA application_id = 0") }
        try queue.close()
        XCTAssertEqual(DatabaseFileState.inspect(databaseURL.path), .unmarked)
        let store = try SubjectStore(home: home)
        XCTAssertEqual(try store.subjects().map(\.subject.name), ["rex"])
        try store.database.read { db in
            XCTAssertEqual(try Int64.fetchOne(db, sql: "PRAGMA application_id"), Int64(SubjectStore.applicationID))
        }
    }

    /// SQLITE_FULL, injected at the SQLite level: `max_page_count` makes the writer
    /// connection fail exactly as a full disk does. (`StoreReliabilityCLITests` fills a
    /// real small disk where mounting is allowed.)
    func testFullDatabaseIsReportedAsAFullDisk() throws {
        let store = try SubjectStore(home: home)
        try store.database.writeWithoutTransaction { db in
            let pages = try Int.fetchOne(db, sql: "PRAGMA page_count")!
            try db.execute(sql: "PRAGMA max_page_count = \(pages)")
        }
        // Notes that need overflow pages: the insert must grow the file.
        XCTAssertThrowsError(try store.createSubject(name: "rex", token: "sks", classNoun: "dog",
                                                     notes: String(repeating: "n", count: 100_000), photos: try photos())) { error in
            guard case .diskFull(let path, _) = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, store.home.path)
            let text = "\(error)"
            XCTAssertTrue(text.contains("is full") && text.contains("Free some space") && text.contains("df -h"), text)
            XCTAssertFalse(text.contains("restore"), text)
        }
        XCTAssertEqual(try store.subjects().count, 0)
        XCTAssertEqual(Leftovers.entries(store.home.appendingPathComponent("subjects").path), [], "the photos moved into place are moved back")
        XCTAssertEqual(Leftovers.entries(store.home.appendingPathComponent("tmp").path), [])
    }

    /// The read-only path, reached through a database file that cannot be written. As
    /// root, permission bits do not stop writes, so the file is made immutable
    /// (`chattr +i`) there; a test skips when neither works.
    func testUnwritableDatabaseOpensReadOnly() throws {
        try makeSubject()
        let locked = try makeUnwritable(databaseURL)
        try XCTSkipUnless(locked, "cannot make \(databaseURL.path) unwritable (neither chmod for non-root nor chattr +i)")
        defer { makeWritable(databaseURL) }
        let store = try SubjectStore(home: home)
        XCTAssertTrue(store.isReadOnly)
        XCTAssertEqual(try store.subjects().map(\.subject.name), ["rex"])
        XCTAssertTrue(try store.checkHealth(verifyHashes: true).isHealthy)
        XCTAssertThrowsError(try store.renameSubject("rex", to: "max")) { error in
            XCTAssertEqual(error as? StoreError, .readOnly(path: store.home.path))
            XCTAssertTrue("\(error)".contains("reading it still works"), "\(error)")
        }
        XCTAssertThrowsError(try store.addPhotos(try photos(4), toSubjectNamed: "rex")) { error in
            XCTAssertEqual(error as? StoreError, .readOnly(path: store.home.path))
        }
        XCTAssertThrowsError(try store.deleteSubject(named: "rex")) { error in
            XCTAssertEqual(error as? StoreError, .readOnly(path: store.home.path))
        }
    }

    func makeUnwritable(_ url: URL) throws -> Bool {
        if getuid() != 0 {
            try FileManager.default.setAttributes([.posixPermissions: 0o444], ofItemAtPath: url.path)
            return access(url.path, W_OK) != 0
        }
        return run("/usr/bin/chattr", ["+i", url.path]) && access(url.path, W_OK) != 0
    }

    func makeWritable(_ url: URL) {
        if getuid() == 0 { _ = run("/usr/bin/chattr", ["-i", url.path]) }
        try? FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: url.path)
    }

    func run(_ tool: String, _ args: [String]) -> Bool {
        guard FileManager.default.isExecutableFile(atPath: tool) else { return false }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}
