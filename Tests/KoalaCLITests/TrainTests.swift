import Foundation
import KoalaStore
import XCTest

/// `koalabooth train` on the tiny model, through the executable: the loss falls, the run
/// and its checkpoints are recorded, and `generate --subject` draws with the result.
final class TrainTests: TrainingTestCase {
    func testTrainingLowersTheLossAndGenerateUsesTheCheckpoint() throws {
        let r = try CLI.run(["train", "robo", "--recipe", tinyRecipe, "--model", model, "--max-steps", "20", "--learning-rate", "3e-2",
                             "--seed", "1"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        let losses = Self.losses(r.stdout)
        XCTAssertEqual(losses.count, 20, r.stdout)
        // Per-step losses jump with their random timesteps; the fixed evaluation set does not.
        let eval = r.stdout.split(separator: "\n").filter { $0.hasPrefix("eval loss ") }.compactMap { Double($0.split(separator: " ")[2]) }
        XCTAssertEqual(eval.count, 2, r.stdout)
        XCTAssertLessThan(eval[1], eval[0] * 0.97, "the loss should fall: \(r.stdout)")
        XCTAssertTrue(r.stdout.contains("peak-rss"), r.stdout)

        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let run = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        XCTAssertEqual(run.status, .finished)
        XCTAssertEqual(run.stepsDone, 20)
        XCTAssertNotNil(run.lastLoss)
        let checkpoints = try store.checkpoints(runID: run.id!)
        XCTAssertEqual(checkpoints.map(\.step), [10, 20])  // tiny.toml: checkpoint.every = 10
        for c in checkpoints { XCTAssertTrue(FileManager.default.fileExists(atPath: store.url(forRelativePath: c.path).path), c.path) }

        let g = try CLI.run(["generate", "--subject", "robo", "--prompt", "a photo of {token} {class}", "--steps", "2",
                             "--width", "64", "--height", "64"], environment: env)
        XCTAssertEqual(g.status, 0, g.stderr)
        XCTAssertEqual(try store.generations(subjectID: subject.id!).first?.runId, run.id)
    }

    func testKilledRunResumesToTheSameResult() throws {
        let base = ["--recipe", tinyRecipe, "--model", model, "--learning-rate", "3e-2", "--seed", "1", "--max-steps", "20"]
        // Killed (SIGKILL, no chance to clean up) once its step-10 checkpoint exists.
        let check = try checkKilledRunResumes(base, killAfter: 10, sameFiles: ["lora-step000020.safetensors"])
        XCTAssertEqual(try check.store.run(id: check.resumedRunID)?.stepsDone, 20)
    }

    func testInterruptSavesACheckpointAndMarksTheRunInterrupted() throws {
        let err = Pipe()
        let p = try startTraining(["--recipe", tinyRecipe, "--model", model, "--max-steps", "200"], stderr: err)
        let store = try SubjectStore(home: home)
        try wait(for: p) { try (store.runs().first?.stepsDone ?? 0) >= 3 }
        Foundation.kill(p.processIdentifier, SIGINT)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 130, stderr)
        XCTAssertTrue(stderr.contains("--resume"), stderr)
        let run = try XCTUnwrap(store.runs().first)
        XCTAssertEqual(run.status, .interrupted)
        XCTAssertLessThan(run.stepsDone, 200)
        let last = try XCTUnwrap(store.checkpoints(runID: run.id!).max { $0.step < $1.step })
        XCTAssertEqual(last.step, run.stepsDone, "the interrupted step is checkpointed")
    }

    func testBatchesAccumulationMinSNRAndKohyaOutput() throws {
        let custom = try recipe([("batch_size = 1", "batch_size = 2"), ("gradient_accumulation = 1", "gradient_accumulation = 2"),
                                 ("rng = \"torch\"", "rng = \"torch\"\nmin_snr_gamma = 5.0"), ("format = \"diffusers\"", "format = \"both\""),
                                 ("random_flip = false", "random_flip = true")])
        let r = try CLI.run(["train", "robo", "--recipe", custom, "--model", model, "--max-steps", "10", "--learning-rate", "3e-2"],
                            environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        let eval = r.stdout.split(separator: "\n").filter { $0.hasPrefix("eval loss ") }.compactMap { Double($0.split(separator: " ")[2]) }
        XCTAssertEqual(eval.count, 2, r.stdout)
        XCTAssertLessThan(eval[1], eval[0], r.stdout)
        let store = try SubjectStore(home: home)
        let run = try XCTUnwrap(store.runs().first)
        let files = try FileManager.default.contentsOfDirectory(atPath: store.runDirectory(subjectID: run.subjectId, runID: run.id!).path)
        XCTAssertTrue(files.contains("lora-step000010.safetensors"), "\(files)")
        XCTAssertTrue(files.contains("lora-step000010.kohya.safetensors"), "\(files)")
        XCTAssertEqual(try store.checkpoints(runID: run.id!).first?.path.hasSuffix("lora-step000010.safetensors"), true)
    }

    func testErrorsAreClearAndLeaveNoRunningRun() throws {
        let unknown = try CLI.run(["train", "nobody", "--recipe", tinyRecipe, "--model", model], environment: env)
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("nobody"), unknown.stderr)

        let noRecipe = try CLI.run(["train", "robo", "--recipe", dir.appendingPathComponent("none.toml").path, "--model", model], environment: env)
        XCTAssertNotEqual(noRecipe.status, 0)
        XCTAssertTrue(noRecipe.stderr.contains("none.toml"), noRecipe.stderr)

        let badModel = try CLI.run(["train", "robo", "--recipe", tinyRecipe, "--model", dir.path], environment: env)
        XCTAssertNotEqual(badModel.status, 0)
        XCTAssertTrue(badModel.stderr.contains("model_index.json"), badModel.stderr)

        let store = try SubjectStore(home: home)
        XCTAssertFalse(try store.runs().contains { $0.status == .running })
    }
}
