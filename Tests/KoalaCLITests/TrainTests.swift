import Foundation
import KoalaStore
import XCTest

/// `koalabooth train` on the tiny model, through the executable: the loss falls, the run
/// and its checkpoints are recorded, and `generate --subject` draws with the result.
final class TrainTests: XCTestCase {
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }
    var model: String { dir.appendingPathComponent("tiny").path }
    var env: [String: String] { ["KOALABOOTH_HOME": home.path] }
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var recipe: String { Self.root.appendingPathComponent("recipes/tiny.toml").path }

    override func setUpWithError() throws {
        dir = try CLI.temporaryDirectory()
        XCTAssertEqual(try CLI.run(["model", "init", "--preset", "tiny", "--seed", "0", "--out", model]).status, 0)
        let photos = Self.root.appendingPathComponent("subjects/robot-toy")
        let jpgs = try FileManager.default.contentsOfDirectory(atPath: photos.path).filter { $0.hasSuffix(".jpg") }.sorted()
            .map { photos.appendingPathComponent($0).path }
        let r = try CLI.run(["subject", "create", "robo", "--class", "toy", "--token", "sks"] + jpgs, environment: env)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// The per-step losses printed as `step I/N loss L …`.
    static func losses(_ stdout: String) -> [Double] {
        stdout.split(separator: "\n").compactMap { line -> Double? in
            let w = line.split(separator: " ")
            guard w.count > 3, w[0] == "step", w[2] == "loss" else { return nil }
            return Double(w[3])
        }
    }

    func testTrainingLowersTheLossAndGenerateUsesTheCheckpoint() throws {
        let r = try CLI.run(["train", "robo", "--recipe", recipe, "--model", model, "--max-steps", "20", "--learning-rate", "3e-2",
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
        let base = ["--recipe", recipe, "--model", model, "--learning-rate", "3e-2", "--seed", "1", "--max-steps", "20"]
        let a = try CLI.run(["train", "robo"] + base, environment: env)
        XCTAssertEqual(a.status, 0, a.stderr)
        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let aRun = try XCTUnwrap(store.runs(subjectID: subject.id!).first)

        // The same run again, killed (SIGKILL, no chance to clean up) once its step-10 checkpoint exists.
        let p = Process()
        p.executableURL = CLI.executable
        p.arguments = ["train", "robo"] + base
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let bID = aRun.id! + 1
        let bDir = store.runDirectory(subjectID: subject.id!, runID: bID)
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: bDir.appendingPathComponent("state-step000010.json").path) && p.isRunning && Date() < deadline {
            usleep(20_000)
        }
        XCTAssertTrue(p.isRunning, "the run ended before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(try store.run(id: bID)?.status, .running, "a killed run cannot record its end")

        let r = try CLI.run(["train", "robo", "--resume"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("resuming run \(bID) from step 10"), r.stdout)
        XCTAssertEqual(Self.losses(r.stdout), Array(Self.losses(a.stdout).suffix(10)))
        let aDir = store.runDirectory(subjectID: subject.id!, runID: aRun.id!)
        XCTAssertEqual(try Data(contentsOf: aDir.appendingPathComponent("lora-step000020.safetensors")),
                       try Data(contentsOf: bDir.appendingPathComponent("lora-step000020.safetensors")))
        let b = try XCTUnwrap(store.run(id: bID))
        XCTAssertEqual(b.status, .finished)
        XCTAssertEqual(b.stepsDone, 20)
    }

    func testInterruptSavesACheckpointAndMarksTheRunInterrupted() throws {
        let p = Process()
        p.executableURL = CLI.executable
        p.arguments = ["train", "robo", "--recipe", recipe, "--model", model, "--max-steps", "200"]
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        let store = try SubjectStore(home: home)
        let deadline = Date().addingTimeInterval(120)
        while try p.isRunning && Date() < deadline && (store.runs().first?.stepsDone ?? 0) < 3 { usleep(20_000) }
        XCTAssertTrue(p.isRunning)
        kill(p.processIdentifier, SIGINT)
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
        var text = try String(contentsOfFile: recipe, encoding: .utf8)
        for (a, b) in [("batch_size = 1", "batch_size = 2"), ("gradient_accumulation = 1", "gradient_accumulation = 2"),
                       ("rng = \"torch\"", "rng = \"torch\"\nmin_snr_gamma = 5.0"), ("format = \"diffusers\"", "format = \"both\""), ("random_flip = false", "random_flip = true")] {
            XCTAssertTrue(text.contains(a), a)
            text = text.replacingOccurrences(of: a, with: b)
        }
        let custom = dir.appendingPathComponent("custom.toml")
        try text.write(to: custom, atomically: true, encoding: .utf8)
        let r = try CLI.run(["train", "robo", "--recipe", custom.path, "--model", model, "--max-steps", "10", "--learning-rate", "3e-2"],
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
        let unknown = try CLI.run(["train", "nobody", "--recipe", recipe, "--model", model], environment: env)
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("nobody"), unknown.stderr)

        let noRecipe = try CLI.run(["train", "robo", "--recipe", dir.appendingPathComponent("none.toml").path, "--model", model], environment: env)
        XCTAssertNotEqual(noRecipe.status, 0)
        XCTAssertTrue(noRecipe.stderr.contains("none.toml"), noRecipe.stderr)

        let badModel = try CLI.run(["train", "robo", "--recipe", recipe, "--model", dir.path], environment: env)
        XCTAssertNotEqual(badModel.status, 0)
        XCTAssertTrue(badModel.stderr.contains("model_index.json"), badModel.stderr)

        let store = try SubjectStore(home: home)
        XCTAssertFalse(try store.runs().contains { $0.status == .running })
    }
}
