import Foundation
import GRDB
@testable import KoalaStore
import XCTest

/// The store side of resuming a killed run: records that can be written again, a
/// checkpoint deletion a crash cannot leave half done with rows of missing files, and
/// runs whose process died.
final class RunRecordingTests: StoreTestCase {

    func makeRun(_ store: SubjectStore, status: RunStatus = .running) throws -> (Subject, TrainingRun, URL) {
        let photo = root.appendingPathComponent("p.jpg")
        try Data("photo".utf8).write(to: photo)
        let subject = try store.subject(named: "rex") ?? store.createSubject(name: "rex", token: "sks", classNoun: "dog",
            photos: [PhotoInput(sourcePath: photo.path, width: 64, height: 64, fileExtension: "jpg")]).subject
        let run = try store.createRun(TrainingRun(subjectId: subject.id!, status: status, baseModelPath: "/m", baseModelFingerprint: "f",
                                                  recipe: "", totalSteps: 20, stepsDone: 7))
        let dir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("validation"), withIntermediateDirectories: true)
        return (subject, run, dir)
    }

    func testCheckpointAndGenerationRecordsCanBeWrittenAgain() throws {
        let store = try SubjectStore(home: home)
        let (subject, run, dir) = try makeRun(store)
        let lora = dir.appendingPathComponent("lora-step000010.safetensors")
        try Data(repeating: 1, count: 64).write(to: lora)
        let first = try store.recordCheckpoint(runID: run.id!, step: 10, kind: .lora, file: lora)
        XCTAssertEqual(try store.recordCheckpoint(runID: run.id!, step: 10, kind: .lora, file: lora), first, "the same file is recognised")
        try Data(repeating: 2, count: 80).write(to: lora)
        let rewritten = try store.recordCheckpoint(runID: run.id!, step: 10, kind: .lora, file: lora)
        XCTAssertEqual(rewritten.id, first.id)
        XCTAssertEqual(rewritten.byteCount, 80)
        XCTAssertNotEqual(rewritten.sha256, first.sha256)
        XCTAssertEqual(try store.checkpoints(runID: run.id!), [rewritten])
        XCTAssertThrowsError(try store.recordCheckpoint(runID: 999, step: 10, kind: .lora, file: lora)) {
            XCTAssertEqual($0 as? StoreError, .unknownRun(id: 999))
        }

        let image = dir.appendingPathComponent("validation/step000015-p1-1.png")
        try Data("png".utf8).write(to: image)
        let g = Generation(subjectId: subject.id!, runId: run.id, checkpointId: nil, prompt: "sks dog", seed: 0, steps: 4,
                           scheduler: "dpm-solver++", guidanceScale: 7.5, width: 64, height: 64, imagePath: try store.relativePath(of: image))
        let recorded = try store.recordGeneration(g)
        XCTAssertEqual(try store.recordGeneration(g), recorded)
        var linked = g
        linked.checkpointId = first.id
        let updated = try store.recordGeneration(linked)
        XCTAssertEqual(updated.id, recorded.id)
        XCTAssertEqual(updated.createdAt, recorded.createdAt)
        XCTAssertEqual(try store.generations(subjectID: subject.id!), [updated])
        XCTAssertEqual(try store.generation(imagePath: g.imagePath), updated)
    }

    /// A crash at any moment of `deleteCheckpoints` must not leave a row whose file is
    /// gone: the files move only after the rows' deletion has committed.
    func testCheckpointDeletionMovesFilesOnlyAfterItsRowsAreGone() throws {
        let plain = try SubjectStore(home: home)
        let (_, run, dir) = try makeRun(plain)
        let lora = dir.appendingPathComponent("lora-step000010.safetensors"), state = dir.appendingPathComponent("state-step000010.json")
        try Data(repeating: 1, count: 64).write(to: lora)
        try Data("{}".utf8).write(to: state)
        let c = try plain.recordCheckpoint(runID: run.id!, step: 10, kind: .lora, file: lora)
        let seen = FilesSeen()
        let watching = try SubjectStore(home: home) { step in
            if step == .beforeCommit { seen.present = [lora, state].map { FileManager.default.fileExists(atPath: $0.path) } }
        }
        try watching.deleteCheckpoints([c], files: [state])
        XCTAssertEqual(seen.present, [true, true], "files still in place while the rows' deletion is uncommitted")
        XCTAssertEqual(try watching.checkpoints(runID: run.id!), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: lora.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("tmp").path), [])
    }

    final class FilesSeen: @unchecked Sendable { var present: [Bool] = [] }

    func testRunsOfDeadProcessesAreMarkedInterruptedAndLiveOnesAreNot() throws {
        let store = try SubjectStore(home: home)
        let (subject, dead, _) = try makeRun(store)
        let queued = try makeRun(store, status: .queued).1
        let finished = try makeRun(store, status: .finished).1

        // This process trains `live` (its lock, naming the run): it is left alone.
        let live = try makeRun(store).1
        let lock = try TrainingLock.acquire(subject: subject, in: store, attempted: "train")
        lock.setRun(live.id!)
        let marked = try store.markAbandonedRuns()
        XCTAssertEqual(marked.map(\.id), [dead.id, queued.id])
        for id in [dead.id!, queued.id!] {
            let r = try XCTUnwrap(store.run(id: id))
            XCTAssertEqual(r.status, .interrupted)
            XCTAssertTrue(r.errorMessage?.contains("after step 7 of 20") == true, "\(String(describing: r.errorMessage))")
        }
        XCTAssertEqual(try store.run(id: live.id!)?.status, .running)
        XCTAssertEqual(try store.run(id: finished.id!)?.status, .finished)
        XCTAssertEqual(try store.markAbandonedRuns(), [], "nothing left to mark")

        // A lock just taken (no run yet) protects every run of its subject from others…
        let fresh = try makeRun(store).1
        lock.release()
        let unnamed = try TrainingLock.acquire(subject: subject, in: store, attempted: "train")
        XCTAssertEqual(try store.markAbandonedRuns(), [])
        // …but its holder, which has started nothing yet, marks them itself.
        XCTAssertEqual(try store.markAbandonedRuns(holding: unnamed).map(\.id), [live.id, fresh.id])
        unnamed.release()
    }
}
