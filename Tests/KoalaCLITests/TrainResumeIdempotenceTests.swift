import Foundation
import KoalaStore
import XCTest

/// What `train --resume` must redo safely after a kill or a failed write anywhere in a
/// checkpoint step, and what the store says of a run whose process died.
final class TrainResumeIdempotenceTests: TrainingTestCase {
    /// recipes/tiny.toml: checkpoints at 10, 20, 30, validation at 15 and 30.
    var tinyArgs: [String] { ["--recipe", tinyRecipe, "--model", model, "--learning-rate", "3e-2", "--seed", "1"] }

    func validationPath(_ step: Int, in runDir: URL) -> String {
        runDir.appendingPathComponent("validation/" + String(format: "step%06d-p1-1.png", step)).path
    }

    /// `store`'s generations of the run in `runDir`, by image path relative to it.
    func validationRows(_ store: SubjectStore, _ runDir: URL) throws -> [String] {
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let prefix = try store.relativePath(of: runDir) + "/"
        return try store.generations(subjectID: subject.id!).map(\.imagePath).filter { $0.hasPrefix(prefix) }
            .map { String($0.dropFirst(prefix.count)) }.sorted()
    }

    /// Killed after the step-15 validation image was drawn and recorded, before the
    /// step-20 checkpoint: the resumed run redraws step 15 (it resumes from 10).
    func testKillAfterAValidationImageBeforeTheNextCheckpointResumes() throws {
        let store = try SubjectStore(home: home)
        // The image is renamed into place before its row is written: wait for both.
        let check = try checkKilledRunResumes(tinyArgs, killAfter: 10, sameFiles: ["lora-step000030.safetensors"],  // PNGs name their run: they differ
                                              killWhen: { dir in
                                                  !Self.hasCheckpoint(20, in: dir) && FileManager.default.fileExists(atPath: self.validationPath(15, in: dir))
                                                      && (try? self.validationRows(store, dir))?.isEmpty == false },
                                              afterKill: { store, id in
                                                  let dir = store.runDirectory(subjectID: try store.run(id: id)!.subjectId, runID: id)
                                                  XCTAssertEqual(try self.validationRows(store, dir), ["validation/step000015-p1-1.png"])
                                              })
        XCTAssertEqual(try validationRows(check.store, check.resumedDirectory),
                       ["validation/step000015-p1-1.png", "validation/step000030-p1-1.png"], "each image recorded once")
        XCTAssertEqual(try check.store.checkpoints(runID: check.resumedRunID).map(\.step), [20, 30])
    }

    /// A write failing at step 20 (as on a full disk) fails the run with the error;
    /// `--resume` then redoes steps 11-20, the step-15 validation image included.
    func testAFailedCheckpointWriteFailsTheRunAndResumeCompletesIt() throws {
        var env = self.env
        env["KOALABOOTH_FAULT_FAIL_AT_WRITE"] = "lora-step000020.safetensors"
        let failed = try CLI.run(["train", "robo"] + tinyArgs, environment: env)
        XCTAssertNotEqual(failed.status, 0, failed.stdout)
        XCTAssertTrue(failed.stderr.contains("No space left on device"), failed.stderr)
        let store = try SubjectStore(home: home)
        let run = try XCTUnwrap(store.runs().first)
        XCTAssertEqual(run.status, .failed)
        XCTAssertTrue(run.errorMessage?.contains("No space left on device") == true, "\(String(describing: run.errorMessage))")

        let r = try CLI.run(["train", "robo", "--resume"], environment: self.env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("resuming run \(run.id!) from step 10"), r.stdout)
        let done = try XCTUnwrap(store.run(id: run.id!))
        XCTAssertEqual(done.status, .finished)
        XCTAssertNil(done.errorMessage)
        let dir = store.runDirectory(subjectID: run.subjectId, runID: run.id!)
        XCTAssertEqual(try validationRows(store, dir), ["validation/step000015-p1-1.png", "validation/step000030-p1-1.png"])
        XCTAssertEqual(try store.checkpoints(runID: run.id!).map(\.step), [20, 30])
    }

    /// Killed after the final checkpoint's files are in place, before its row: resume
    /// finds them, records the checkpoint, draws the final validation image, and
    /// `generate --subject` uses step 30.
    func testKillBeforeTheFinalCheckpointRowIsReconciledOnResume() throws {
        var env = self.env
        env["KOALABOOTH_FAULT_KILL_AT_WRITE"] = "checkpoint row of step 30"
        let killed = try CLI.run(["train", "robo"] + tinyArgs, environment: env)
        XCTAssertEqual(killed.status, SIGKILL, killed.stderr)
        let store = try SubjectStore(home: home)
        let run = try XCTUnwrap(store.runs().first)
        let dir = store.runDirectory(subjectID: run.subjectId, runID: run.id!)
        XCTAssertTrue(Self.hasCheckpoint(30, in: dir))
        XCTAssertEqual(try store.checkpoints(runID: run.id!).map(\.step), [10, 20])

        let r = try CLI.run(["train", "robo", "--resume"], environment: self.env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("resuming run \(run.id!) from step 30"), r.stdout)
        XCTAssertTrue(r.stdout.contains("checkpoint step 30:"), r.stdout)
        XCTAssertTrue(r.stdout.contains("removed checkpoint step 10"), r.stdout)
        XCTAssertTrue(r.stdout.contains("validation step 30:"), r.stdout)
        let checkpoints = try store.checkpoints(runID: run.id!)
        XCTAssertEqual(checkpoints.map(\.step), [20, 30])
        XCTAssertEqual(checkpoints.last?.path, try store.relativePath(of: dir.appendingPathComponent("lora-step000030.safetensors")))
        XCTAssertEqual(try validationRows(store, dir), ["validation/step000015-p1-1.png", "validation/step000030-p1-1.png"])
        XCTAssertEqual(try store.latestFinishedCheckpoint(subjectID: run.subjectId)?.checkpoint.step, 30)
        let health = try store.checkHealth(verifyHashes: true)
        XCTAssertEqual(health.fileProblems.map(\.path), [])
    }

    /// A SIGKILLed run is shown as interrupted, with the reason, by the next listing; a
    /// live one stays running.
    func testAKilledRunIsListedAsInterruptedWithTheReason() throws {
        let p = try startTraining(["--recipe", tinyRecipe, "--model", model, "--max-steps", "500"])
        defer { if p.isRunning { Foundation.kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        let store = try SubjectStore(home: home)
        try wait(for: p) { try (store.runs().first?.stepsDone ?? 0) >= 2 }
        let live = try CLI.run(["runs", "list"], environment: env)
        XCTAssertEqual(live.status, 0, live.stderr)
        XCTAssertTrue(live.stdout.contains("running"), live.stdout)
        XCTAssertEqual(try store.runs().first?.status, .running, "a live run is not marked")

        Foundation.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let list = try CLI.run(["runs", "list"], environment: env)
        XCTAssertEqual(list.status, 0, list.stderr)
        XCTAssertTrue(list.stdout.contains("interrupted"), list.stdout)
        XCTAssertFalse(list.stdout.contains("running"), list.stdout)
        let run = try XCTUnwrap(store.runs().first)
        XCTAssertEqual(run.status, .interrupted)
        let show = try CLI.run(["runs", "show", "\(run.id!)"], environment: env)
        XCTAssertTrue(show.stdout.contains("error: the process training it ended without recording an outcome"), show.stdout)

        // Training again marks such a run too, when no listing did.
        let second = try startTraining(["--recipe", tinyRecipe, "--model", model, "--max-steps", "500"])
        try wait(for: second) { try store.runs().count == 2 && (store.runs().first?.stepsDone ?? 0) >= 1 }
        Foundation.kill(second.processIdentifier, SIGKILL)
        second.waitUntilExit()
        XCTAssertEqual(try store.run(id: run.id! + 1)?.status, .running)
        let third = try CLI.run(["train", "robo", "--recipe", tinyRecipe, "--model", model, "--max-steps", "2"], environment: env)
        XCTAssertEqual(third.status, 0, third.stderr + third.stdout)
        XCTAssertTrue(third.stderr.contains("run \(run.id! + 1) was left unfinished"), third.stderr)
        XCTAssertEqual(try store.run(id: run.id! + 1)?.status, .interrupted)
        XCTAssertEqual(try store.run(id: run.id! + 2)?.status, .finished)
    }
}
