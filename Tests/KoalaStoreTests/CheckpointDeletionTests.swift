import Foundation
import GRDB
@testable import KoalaStore
import XCTest

/// `deleteCheckpoints` (for `checkpoint.keep_last`) and the training lock that guards
/// `deleteSubject`.
final class CheckpointDeletionTests: StoreTestCase {

    func makeSubject(_ store: SubjectStore, _ name: String = "rex") throws -> Subject {
        let dir = root.appendingPathComponent("in-\(name)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let photos = try (1...3).map { i -> PhotoInput in
            let url = dir.appendingPathComponent("\(i).jpg")
            try Data(repeating: UInt8(i), count: 100 + i).write(to: url)
            return PhotoInput(sourcePath: url.path, width: 512, height: 512, fileExtension: "jpg")
        }
        return try store.createSubject(name: name, token: "sks", classNoun: "dog", photos: photos).subject
    }

    struct Fixture {
        var run: TrainingRun
        var old: Checkpoint
        var new: Checkpoint
        /// Files of the old checkpoint beside its recorded LoRA: optimizer, state, a folder.
        var oldExtras: [URL]
        var generation: Generation
    }

    /// A run with checkpoints at steps 10 and 20 (each with side files) and a validation
    /// image drawn with the step-10 one.
    func makeRun(_ store: SubjectStore, _ subject: Subject) throws -> Fixture {
        let run = try store.createRun(TrainingRun(subjectId: subject.id!, baseModelPath: "/m", baseModelFingerprint: "f", recipe: "", totalSteps: 20))
        let dir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("validation"), withIntermediateDirectories: true)
        var checkpoints: [Checkpoint] = []
        var extras: [URL] = []
        for step in [10, 20] {
            let tag = String(format: "step%06d", step)
            let lora = dir.appendingPathComponent("lora-\(tag).safetensors")
            try Data(repeating: UInt8(step), count: 64).write(to: lora)
            checkpoints.append(try store.recordCheckpoint(runID: run.id!, step: step, kind: .lora, file: lora))
            let files = [dir.appendingPathComponent("optimizer-\(tag).safetensors"), dir.appendingPathComponent("state-\(tag).json")]
            for f in files { try Data("x\(step)".utf8).write(to: f) }
            let folder = dir.appendingPathComponent("unet-\(tag)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data("w".utf8).write(to: folder.appendingPathComponent("diffusion_pytorch_model.safetensors"))
            if step == 10 { extras = files + [folder] }
        }
        let image = dir.appendingPathComponent("validation/step000010-p1-1.png")
        try Data("png".utf8).write(to: image)
        let gen = try store.recordGeneration(Generation(subjectId: subject.id!, runId: run.id, checkpointId: checkpoints[0].id, prompt: "sks dog",
                                                     seed: 0, steps: 4, scheduler: "dpm-solver++", guidanceScale: 7.5, width: 64, height: 64,
                                                     imagePath: try store.relativePath(of: image)))
        return Fixture(run: run, old: checkpoints[0], new: checkpoints[1], oldExtras: extras, generation: gen)
    }

    func exists(_ store: SubjectStore, _ relative: String) -> Bool {
        FileManager.default.fileExists(atPath: store.url(forRelativePath: relative).path)
    }

    func testDeletesRowsAndFilesAndKeepsGenerationsValid() throws {
        let store = try SubjectStore(home: home)
        let f = try makeRun(store, try makeSubject(store))
        try store.deleteCheckpoints([f.old], files: f.oldExtras)

        XCTAssertEqual(try store.checkpoints(runID: f.run.id!), [f.new])
        XCTAssertFalse(exists(store, f.old.path))
        for url in f.oldExtras { XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), url.path) }
        XCTAssertTrue(exists(store, f.new.path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: f.oldExtras[0].path.replacingOccurrences(of: "000010", with: "000020")))
        // The image stays in the history, with its run; only the checkpoint link is gone.
        let gen = try XCTUnwrap(store.generations(subjectID: f.generation.subjectId).first)
        XCTAssertEqual(gen.id, f.generation.id)
        XCTAssertEqual(gen.runId, f.run.id)
        XCTAssertNil(gen.checkpointId)
        let health = try store.checkHealth(verifyHashes: true)
        XCTAssertEqual(health.foreignKeyViolations, 0)
        XCTAssertEqual(health.fileProblems.map(\.path), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("tmp").path), [])
    }

    func testAFailedDeleteChangesNothing() throws {
        let plain = try SubjectStore(home: home)
        let f = try makeRun(plain, try makeSubject(plain))
        let failing = try SubjectStore(home: home) { step in if step == .beforeCommit { throw InjectedFailure() } }
        let tree = try files(failing)
        XCTAssertThrowsError(try failing.deleteCheckpoints([f.old], files: f.oldExtras)) { XCTAssertTrue($0 is InjectedFailure, "\($0)") }
        XCTAssertEqual(try failing.checkpoints(runID: f.run.id!), [f.old, f.new])
        XCTAssertEqual(try failing.generations(subjectID: f.generation.subjectId).first?.checkpointId, f.old.id)
        XCTAssertEqual(try files(failing), tree)

        let outside = root.appendingPathComponent("elsewhere.bin")
        try Data("x".utf8).write(to: outside)
        XCTAssertThrowsError(try failing.deleteCheckpoints([f.old], files: [outside])) {
            XCTAssertEqual($0 as? StoreError, .outsideHome(path: outside.standardizedFileURL.path, home: failing.home.path))
        }
        XCTAssertEqual(try files(failing), tree)
        XCTAssertTrue(FileManager.default.fileExists(atPath: outside.path))
    }

    /// Every file under the data directory with its contents (not the database).
    func files(_ store: SubjectStore) throws -> [String] {
        let walker = FileManager.default.enumerator(at: store.home.appendingPathComponent("subjects"), includingPropertiesForKeys: nil)!
        var out: [String] = []
        for case let url as URL in walker {
            var isDir: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir)
            out.append(try store.relativePath(of: url) + (isDir.boolValue ? "/" : " " + String(decoding: try Data(contentsOf: url), as: UTF8.self)))
        }
        return out.sorted()
    }

    func testTrainingLockRefusesDeleteUntilReleased() throws {
        let store = try SubjectStore(home: home)
        let rex = try makeSubject(store)
        let other = try makeSubject(store, "other")
        XCTAssertNil(TrainingLock.holder(subjectID: rex.id!, in: store))

        let lock = try TrainingLock.acquire(subject: rex, in: store, attempted: "train")
        lock.setRun(42)
        XCTAssertEqual(TrainingLock.holder(subjectID: rex.id!, in: store), TrainingLockHolder(pid: getpid(), runID: 42))
        XCTAssertThrowsError(try TrainingLock.acquire(subject: rex, in: store, attempted: "train")) {
            XCTAssertEqual($0 as? StoreError, .subjectBusy(name: "rex", attempted: "train", pid: getpid(), runID: 42))
        }
        XCTAssertThrowsError(try store.deleteSubject(named: "rex")) {
            XCTAssertEqual($0 as? StoreError, .subjectBusy(name: "rex", attempted: "delete", pid: getpid(), runID: 42))
            XCTAssertTrue("\($0)".contains("run 42 (process \(getpid()))"), "\($0)")
            XCTAssertTrue("\($0)".contains("kill -INT \(getpid())"), "\($0)")
        }
        XCTAssertNotNil(try store.subject(named: "rex"))
        // Another subject is not affected.
        try store.deleteSubject(named: "other")
        XCTAssertNil(try store.subject(named: "other"))
        _ = other

        lock.release()
        XCTAssertNil(TrainingLock.holder(subjectID: rex.id!, in: store))
        try store.deleteSubject(named: "rex")
        XCTAssertNil(try store.subject(named: "rex"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: TrainingLock.path(subjectID: rex.id!, in: store)))
    }
}
