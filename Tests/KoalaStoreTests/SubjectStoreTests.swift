import Foundation
import GRDB
@testable import KoalaStore
import KoalaTestSupport
import XCTest

/// A failure the tests inject into store operations.
struct InjectedFailure: Error {}

final class SubjectStoreTests: StoreTestCase {


    /// A source "photo" (the store does not decode images, so any bytes do).
    func photo(_ name: String, seed: Int, size: Int = 3000) throws -> PhotoInput {
        let dir = root.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        try Data((0..<size).map { UInt8(truncatingIfNeeded: $0 * (seed + 3) + seed) }).write(to: url)
        return PhotoInput(sourcePath: url.path, width: 300 + seed, height: 400, fileExtension: name.hasSuffix(".png") ? "png" : "jpg")
    }

    func threePhotos() throws -> [PhotoInput] {
        [try photo("a.jpg", seed: 1), try photo("b.jpg", seed: 2), try photo("c.png", seed: 3)]
    }

    /// Every file in the data directory except the database's own, with its hash,
    /// plus every row of every table: equal snapshots mean nothing changed.
    func snapshot(_ store: SubjectStore) throws -> [String] {
        var out: [String] = []
        let walker = FileManager.default.enumerator(at: store.home, includingPropertiesForKeys: [.isRegularFileKey])!
        for case let url as URL in walker where (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true {
            let rel = try store.relativePath(of: url)
            if rel.hasPrefix(SubjectStore.databaseFileName) || rel == ".migrate.lock" { continue }
            out.append("file \(rel) \(try SHA256.hexOfFile(atPath: url.path).hex)")
        }
        try store.database.read { db in
            for table in ["subject", "photo", "trainingRun", "checkpoint", "generation"] {
                for row in try Row.fetchAll(db, sql: "SELECT * FROM \(table) ORDER BY id") { out.append("\(table) \(row)") }
            }
        }
        return out.sorted()
    }

    func temporaryLeftovers(_ store: SubjectStore) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: store.home.appendingPathComponent("tmp").path)) ?? []
    }

    // MARK: Schema

    func testMigratesEmptyDirectoryAndReopens() throws {
        let nested = root.appendingPathComponent("a/b/home")
        let store = try SubjectStore(home: nested)
        try store.database.read { db in
            XCTAssertEqual(try Int.fetchOne(db, sql: "PRAGMA user_version"), SubjectStore.schemaVersion)
            XCTAssertEqual(try String.fetchOne(db, sql: "PRAGMA journal_mode"), "wal")
            XCTAssertEqual(try Int.fetchOne(db, sql: "PRAGMA foreign_keys"), 1)
            for table in ["subject", "photo", "trainingRun", "checkpoint", "generation"] {
                XCTAssertTrue(try db.tableExists(table), table)
            }
            XCTAssertEqual(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations"), ["v1", "v2"])
        }
        _ = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        let again = try SubjectStore(home: nested)
        XCTAssertEqual(try again.subjects().map(\.subject.name), ["rex"])
    }

    func testDatabaseFromNewerVersionIsRefused() throws {
        let store = try SubjectStore(home: home)
        try store.database.write { db in try db.execute(sql: "PRAGMA user_version = 7") }
        XCTAssertThrowsError(try SubjectStore(home: home)) { error in
            XCTAssertEqual(error as? StoreError, .databaseTooNew(path: store.databasePath, version: 7, supported: SubjectStore.schemaVersion))
            XCTAssertTrue("\(error)".contains("newer KoalaBooth"))
        }
        // A migration this version does not know also means "newer".
        try store.database.write { db in
            try db.execute(sql: "PRAGMA user_version = 1")
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v9-future')")
        }
        XCTAssertThrowsError(try SubjectStore(home: home)) { error in
            guard case .databaseTooNew = error as? StoreError else { return XCTFail("\(error)") }
        }
    }

    func testUnusableDataDirectoriesAreClearErrors() throws {
        let file = root.appendingPathComponent("plain-file")
        try Data("x".utf8).write(to: file)
        XCTAssertThrowsError(try SubjectStore(home: file)) { error in
            XCTAssertEqual(error as? StoreError, .homeNotADirectory(path: file.path))
        }
        // /proc refuses new entries even to root, like a read-only mount.
        let readOnly = URL(fileURLWithPath: "/proc/koalabooth-test-\(getpid())/home")
        XCTAssertThrowsError(try SubjectStore(home: readOnly)) { error in
            guard case .homeNotWritable(let path, _) = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, readOnly.path)
            XCTAssertTrue("\(error)".contains("Use a writable location"), "\(error)")
        }
        let garbage = root.appendingPathComponent("garbage")
        try FileManager.default.createDirectory(at: garbage, withIntermediateDirectories: true)
        try Data(repeating: 0x5A, count: 8192).write(to: garbage.appendingPathComponent(SubjectStore.databaseFileName))
        XCTAssertThrowsError(try SubjectStore(home: garbage)) { error in
            guard case .databaseUnreadable = error as? StoreError else { return XCTFail("\(error)") }
        }
    }

    func testHomeResolution() {
        XCTAssertEqual(SubjectStore.resolveHome("/x/y", environment: ["KOALABOOTH_HOME": "/env"]).path, "/x/y")
        XCTAssertEqual(SubjectStore.resolveHome(nil, environment: ["KOALABOOTH_HOME": "/env"]).path, "/env")
        XCTAssertEqual(SubjectStore.resolveHome(nil, environment: [:]).path,
                       URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".koalabooth").path)
    }

    // MARK: Subjects and photos

    func testCreateStoresPhotosByHashWithRelativePaths() throws {
        let store = try SubjectStore(home: home)
        var inputs = try threePhotos()
        inputs.append(inputs[0]) // the same file twice is stored once
        let (subject, result) = try store.createSubject(name: "Rex", token: "sks", classNoun: "dog", notes: "the dog", photos: inputs)
        XCTAssertEqual(subject.name, "Rex")
        XCTAssertEqual(subject.instancePhrase, "sks dog")
        XCTAssertEqual(result.added.count, 3)
        XCTAssertEqual(result.duplicates.map(\.sameAs), ["a.jpg"])
        for (input, photo) in zip(inputs, result.added) {
            let expected = try SHA256.hexOfFile(atPath: input.sourcePath)
            XCTAssertEqual(photo.sha256, expected.hex)
            XCTAssertEqual(photo.byteCount, expected.size)
            XCTAssertEqual(photo.path, "subjects/\(subject.id!)/photos/\(expected.hex).\(input.fileExtension)")
            XCTAssertFalse(photo.path.hasPrefix("/"))
            XCTAssertEqual(try SHA256.hexOfFile(atPath: store.url(forRelativePath: photo.path).path).hex, expected.hex)
            XCTAssertEqual(photo.width, input.width)
            XCTAssertEqual(photo.originalName, (input.sourcePath as NSString).lastPathComponent)
        }
        XCTAssertEqual(try store.photos(subjectID: subject.id!).map(\.sha256), result.added.map(\.sha256))
        XCTAssertEqual(try store.subject(named: "rEX")?.id, subject.id)
        let summary = try store.subjects()
        XCTAssertEqual(summary.count, 1)
        XCTAssertEqual(summary[0].photoCount, 3)
        XCTAssertEqual(summary[0].runCount, 0)
        XCTAssertNil(summary[0].lastRunStatus)
        XCTAssertEqual(temporaryLeftovers(store), [])
    }

    func testMovedDataDirectoryStillResolvesFiles() throws {
        let store = try SubjectStore(home: home)
        let (subject, _) = try store.createSubject(name: "mug", token: "zwx", classNoun: "mug", photos: try threePhotos())
        let moved = root.appendingPathComponent("elsewhere/home2")
        try FileManager.default.createDirectory(at: moved.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.moveItem(at: home, to: moved)
        let reopened = try SubjectStore(home: moved)
        let photos = try reopened.photos(subjectID: subject.id!)
        XCTAssertEqual(photos.count, 3)
        for p in photos { XCTAssertTrue(FileManager.default.fileExists(atPath: reopened.url(forRelativePath: p.path).path), p.path) }
        XCTAssertTrue(try reopened.checkHealth(verifyHashes: true).isHealthy)
    }

    func testAddPhotosSkipsWhatTheSubjectHas() throws {
        let store = try SubjectStore(home: home)
        let inputs = try threePhotos()
        _ = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: inputs)
        let copy = root.appendingPathComponent("renamed-copy.jpg")
        try FileManager.default.copyItem(atPath: inputs[1].sourcePath, toPath: copy.path)
        let new = try photo("d.jpg", seed: 4)
        let result = try store.addPhotos([PhotoInput(sourcePath: copy.path, width: 1, height: 1, fileExtension: "jpg"), new], toSubjectNamed: "REX")
        XCTAssertEqual(result.added.map(\.originalName), ["d.jpg"])
        XCTAssertEqual(result.duplicates.map(\.sameAs), ["b.jpg"])
        XCTAssertEqual(try store.subjects()[0].photoCount, 4)
        // Another subject may hold the same picture.
        let other = try store.createSubject(name: "rex2", token: "sks", classNoun: "dog", photos: inputs)
        XCTAssertEqual(other.photos.added.count, 3)
    }

    func testNameAndTokenRules() throws {
        let store = try SubjectStore(home: home)
        _ = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        let before = try snapshot(store)
        for (name, token, classNoun) in [("", "sks", "dog"), ("has space", "sks", "dog"), ("-dash", "sks", "dog"),
                                         ("émile", "sks", "dog"), (String(repeating: "x", count: 65), "sks", "dog"),
                                         ("ok", "two words", "dog"), ("ok", "", "dog"), ("ok", "s-k", "dog"), ("ok", "sks", "")] {
            XCTAssertThrowsError(try store.createSubject(name: name, token: token, classNoun: classNoun, photos: try threePhotos()), name) { error in
                switch error as? StoreError {
                case .invalidName, .invalidToken, .invalidClassNoun: break
                default: XCTFail("\(name)/\(token): \(error)")
                }
            }
        }
        XCTAssertThrowsError(try store.createSubject(name: "REX", token: "sks", classNoun: "dog", photos: try threePhotos())) { error in
            XCTAssertEqual(error as? StoreError, .duplicateName(name: "REX"))
        }
        XCTAssertEqual(try snapshot(store), before)
        XCTAssertNoThrow(try Subject.validate(name: "Rex_2-b"))
    }

    func testRenameKeepsFilesAndRefusesTakenNames() throws {
        let store = try SubjectStore(home: home)
        let (rex, _) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        _ = try store.createSubject(name: "fido", token: "sks", classNoun: "dog", photos: try threePhotos())
        let files = try store.photos(subjectID: rex.id!).map(\.path)
        XCTAssertThrowsError(try store.renameSubject("rex", to: "FIDO")) { XCTAssertEqual($0 as? StoreError, .duplicateName(name: "FIDO")) }
        XCTAssertThrowsError(try store.renameSubject("nobody", to: "x")) { XCTAssertEqual($0 as? StoreError, .unknownSubject(name: "nobody")) }
        XCTAssertThrowsError(try store.renameSubject("rex", to: "bad name")) { guard case .invalidName = $0 as? StoreError else { return XCTFail() } }
        let renamed = try store.renameSubject("rex", to: "Rexy")
        XCTAssertEqual(renamed.id, rex.id)
        XCTAssertNil(try store.subject(named: "rex"))
        XCTAssertEqual(try store.photos(subjectID: rex.id!).map(\.path), files)
        _ = try store.renameSubject("Rexy", to: "REXY") // a change of case only
        XCTAssertEqual(try store.subject(id: rex.id!)?.name, "REXY")
    }

    func testRemovePhotoByHashPrefixOrName() throws {
        let store = try SubjectStore(home: home)
        let (rex, result) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        let target = result.added[1]
        XCTAssertEqual(try store.findPhoto(subjectNamed: "rex", matching: String(target.sha256.prefix(10))), target)
        XCTAssertEqual(try store.findPhoto(subjectNamed: "rex", matching: "b.jpg"), target)
        XCTAssertEqual(try store.findPhoto(subjectNamed: "rex", matching: (target.path as NSString).lastPathComponent), target)
        XCTAssertThrowsError(try store.findPhoto(subjectNamed: "rex", matching: "zzzz")) { guard case .photoNotFound = $0 as? StoreError else { return XCTFail() } }
        try store.removePhoto(target)
        XCTAssertEqual(try store.photos(subjectID: rex.id!).count, 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.url(forRelativePath: target.path).path))
        XCTAssertTrue(try store.checkHealth().isHealthy)
    }

    func testAmbiguousHashPrefix() throws {
        let store = try SubjectStore(home: home)
        let (_, result) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        // Make two hashes share a prefix by editing the records.
        try store.database.write { db in
            try db.execute(sql: "UPDATE photo SET sha256 = 'abcd' || substr(sha256, 5) WHERE id IN (?, ?)", arguments: [result.added[0].id, result.added[1].id])
        }
        XCTAssertThrowsError(try store.findPhoto(subjectNamed: "rex", matching: "abcd")) { error in
            guard case .ambiguousPhoto(_, _, let matches) = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(matches.count, 2)
        }
    }

    // MARK: All or nothing

    func testFailuresLeaveNothingBehind() throws {
        for step in [StoreStep.stagedFile(index: 1), .beforeCommit] {
            let home = root.appendingPathComponent("h-\(UUID().uuidString)")
            let failing = try SubjectStore(home: home) { if $0 == step { throw InjectedFailure() } }
            let plain = try SubjectStore(home: home)
            _ = try plain.createSubject(name: "base", token: "sks", classNoun: "dog", photos: try threePhotos())
            let run = try plain.createRun(TrainingRun(subjectId: try plain.requireSubject(named: "base").id!, baseModelPath: "/m",
                                                      baseModelFingerprint: "f", recipe: "r", totalSteps: 10))
            let ckpt = plain.runDirectory(subjectID: run.subjectId, runID: run.id!).appendingPathComponent("step-10.safetensors")
            try writeFile(Data("weights".utf8), to: ckpt)
            _ = try plain.recordCheckpoint(runID: run.id!, step: 10, kind: .lora, file: ckpt)
            let before = try snapshot(plain)

            XCTAssertThrowsError(try failing.createSubject(name: "new", token: "sks", classNoun: "dog", photos: try threePhotos()), "\(step)") {
                XCTAssertTrue($0 is InjectedFailure, "\($0)")
            }
            XCTAssertThrowsError(try failing.addPhotos([try photo("x.jpg", seed: 9), try photo("y.jpg", seed: 10)], toSubjectNamed: "base"), "\(step)")
            if step == .beforeCommit {
                XCTAssertThrowsError(try failing.deleteSubject(named: "base"))
                XCTAssertThrowsError(try failing.removePhoto(try plain.photos(subjectID: run.subjectId)[0]))
            }
            XCTAssertEqual(try snapshot(plain), before, "\(step)")
            XCTAssertEqual(temporaryLeftovers(plain), [], "\(step)")
            XCTAssertTrue(try plain.checkHealth(verifyHashes: true).isHealthy, "\(step)")
            // A failed create leaves no directory for its subject id.
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("subjects").path), ["\(run.subjectId)"])
        }
    }

    func testMissingSourceFileRejectsTheWholeImport() throws {
        let store = try SubjectStore(home: home)
        var inputs = try threePhotos()
        inputs.append(PhotoInput(sourcePath: root.appendingPathComponent("nope.jpg").path, width: 1, height: 1, fileExtension: "jpg"))
        let before = try snapshot(store)
        XCTAssertThrowsError(try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: inputs)) { error in
            guard case .fileUnreadable(let path, _) = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("nope.jpg"))
        }
        XCTAssertEqual(try snapshot(store), before)
        XCTAssertEqual(temporaryLeftovers(store), [])
    }

    // MARK: Runs, checkpoints, generations, delete

    func testDeleteCascadesToRowsAndFiles() throws {
        let store = try SubjectStore(home: home)
        let (rex, _) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        let (keep, _) = try store.createSubject(name: "keep", token: "sks", classNoun: "dog", photos: try threePhotos())
        let run = try store.createRun(TrainingRun(subjectId: rex.id!, status: .finished, baseModelPath: "/models/koala",
                                                  baseModelFingerprint: "abc", recipe: "steps = 10", totalSteps: 10,
                                                  stepsDone: 10, lastLoss: 0.125))
        let file = store.runDirectory(subjectID: rex.id!, runID: run.id!).appendingPathComponent("lora-10.safetensors")
        try writeFile(Data(repeating: 7, count: 100), to: file)
        let ckpt = try store.recordCheckpoint(runID: run.id!, step: 10, kind: .lora, file: file)
        XCTAssertEqual(ckpt.byteCount, 100)
        XCTAssertEqual(ckpt.path, "subjects/\(rex.id!)/runs/\(run.id!)/lora-10.safetensors")
        let image = store.generationDirectory(subjectID: rex.id!).appendingPathComponent("1.png")
        try writeFile(Data("png".utf8), to: image)
        let gen = try store.recordGeneration(Generation(subjectId: rex.id!, runId: run.id, checkpointId: ckpt.id, prompt: "a sks dog",
                                                     seed: 42, steps: 20, scheduler: "dpm++", guidanceScale: 5, width: 512, height: 512,
                                                     imagePath: try store.relativePath(of: image)))
        XCTAssertEqual(try store.generations(subjectID: rex.id!), [gen])
        XCTAssertEqual(try store.latestFinishedCheckpoint(subjectID: rex.id!)?.checkpoint, ckpt)
        XCTAssertEqual(try store.subjects().first { $0.subject.name == "rex" }?.lastRunStatus, .finished)

        try store.deleteSubject(named: "rex")
        try store.database.read { db in
            for table in ["photo", "trainingRun", "checkpoint", "generation"] {
                XCTAssertEqual(try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table) WHERE \(table == "checkpoint" ? "1" : "subjectId = \(rex.id!)")"), 0, table)
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.subjectDirectory(subjectID: rex.id!).path))
        XCTAssertEqual(try store.photos(subjectID: keep.id!).count, 3)
        XCTAssertTrue(try store.checkHealth(verifyHashes: true).isHealthy)
        XCTAssertEqual(temporaryLeftovers(store), [])
        XCTAssertThrowsError(try store.deleteSubject(named: "rex")) { XCTAssertEqual($0 as? StoreError, .unknownSubject(name: "rex")) }
        // Ids are never reused, so a new subject never meets an old one's files.
        let (next, _) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        XCTAssertGreaterThan(next.id!, keep.id!)
    }

    func testLatestFinishedCheckpointSkipsUnfinishedRuns() throws {
        let store = try SubjectStore(home: home)
        let (rex, _) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        func run(_ status: RunStatus, steps: [Int]) throws -> [Checkpoint] {
            let r = try store.createRun(TrainingRun(subjectId: rex.id!, status: status, baseModelPath: "/m", baseModelFingerprint: "f", recipe: "", totalSteps: 100))
            return try steps.map { step in
                let f = store.runDirectory(subjectID: rex.id!, runID: r.id!).appendingPathComponent("\(step).safetensors")
                try writeFile(Data([UInt8(step)]), to: f)
                return try store.recordCheckpoint(runID: r.id!, step: step, kind: .lora, file: f)
            }
        }
        XCTAssertNil(try store.latestFinishedCheckpoint(subjectID: rex.id!))
        let finished = try run(.finished, steps: [50, 100])
        _ = try run(.failed, steps: [20])
        _ = try run(.running, steps: [])
        XCTAssertEqual(try store.latestFinishedCheckpoint(subjectID: rex.id!)?.checkpoint, finished[1])
        XCTAssertEqual(try store.runs(subjectID: rex.id!).map(\.status), [.running, .failed, .finished])
        XCTAssertEqual(try store.checkpoints(subjectID: rex.id!).map(\.step), [20, 50, 100])
        XCTAssertThrowsError(try store.recordCheckpoint(runID: 999, step: 1, kind: .full, file: store.url(forRelativePath: finished[0].path)))
        XCTAssertThrowsError(try store.recordCheckpoint(runID: finished[0].runId, step: 1, kind: .full, file: root.appendingPathComponent("x"))) {
            guard case .outsideHome = $0 as? StoreError else { return XCTFail("\($0)") }
        }
    }

    func testHealthCheckFindsMissingChangedAndOrphanFiles() throws {
        let store = try SubjectStore(home: home)
        let (rex, result) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try threePhotos())
        var report = try store.checkHealth(verifyHashes: true)
        XCTAssertEqual(report.integrity, ["ok"])
        XCTAssertEqual(report.filesChecked, 3)
        XCTAssertTrue(report.isHealthy)
        try FileManager.default.removeItem(at: store.url(forRelativePath: result.added[0].path))
        try Data(repeating: 1, count: 5).write(to: store.url(forRelativePath: result.added[1].path))
        let sameSize = try Data(contentsOf: store.url(forRelativePath: result.added[2].path))
        try Data(sameSize.reversed()).write(to: store.url(forRelativePath: result.added[2].path))
        try Data("stray".utf8).write(to: store.subjectDirectory(subjectID: rex.id!).appendingPathComponent("stray.txt"))
        report = try store.checkHealth(verifyHashes: true)
        XCTAssertFalse(report.isHealthy)
        XCTAssertEqual(report.fileProblems.map(\.path), result.added.map(\.path))
        XCTAssertEqual(report.fileProblems[0].problem, "missing")
        XCTAssertTrue(report.fileProblems[1].problem.contains("size 5"))
        XCTAssertTrue(report.fileProblems[2].problem.contains("SHA-256"))
        XCTAssertEqual(report.orphans, ["subjects/\(rex.id!)/stray.txt"])
        XCTAssertEqual(try store.checkHealth(verifyHashes: false).fileProblems.count, 2)
    }

    /// Two connections (as two processes would have) writing and reading at once.
    func testConcurrentStoresDoNotFail() throws {
        let a = try SubjectStore(home: home)
        let b = try SubjectStore(home: home)
        let inputs = try threePhotos()
        let errors = ErrorBox()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            do {
                let store = i % 2 == 0 ? a : b
                _ = try store.createSubject(name: "s\(i)", token: "sks", classNoun: "dog", photos: inputs)
                _ = try store.subjects()
            } catch { errors.append(error) }
        }
        XCTAssertEqual(errors.all.map { "\($0)" }, [])
        XCTAssertEqual(try a.subjects().count, 8)
        XCTAssertTrue(try b.checkHealth(verifyHashes: true).isHealthy)
    }
}

final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [Error] = []
    func append(_ e: Error) { lock.lock(); errors.append(e); lock.unlock() }
    var all: [Error] { lock.lock(); defer { lock.unlock() }; return errors }
}
