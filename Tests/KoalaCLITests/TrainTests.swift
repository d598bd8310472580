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

    func testResumeContinuesToTheSameResult() throws {
        // Run A: 20 steps straight. Run B: 10 steps, then resumed to 20 with --resume.
        let base = ["--recipe", recipe, "--model", model, "--learning-rate", "3e-2", "--seed", "1"]
        let a = try CLI.run(["train", "robo"] + base + ["--max-steps", "20"], environment: env)
        XCTAssertEqual(a.status, 0, a.stderr)
        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        // Simulate a kill after the step-10 checkpoint: a second run whose record says running.
        var b = try store.createRun(TrainingRun(subjectId: subject.id!, status: .running, baseModelPath: model,
                                                baseModelFingerprint: "x",
                                                recipe: try XCTUnwrap(store.runs(subjectID: subject.id!).first).recipe,
                                                totalSteps: 20))
        let aDir = store.runDirectory(subjectID: subject.id!, runID: try XCTUnwrap(store.runs(subjectID: subject.id!).first { $0.id != b.id }).id!)
        let bDir = store.runDirectory(subjectID: subject.id!, runID: b.id!)
        try FileManager.default.createDirectory(at: bDir, withIntermediateDirectories: true)
        for f in ["lora-step000010.safetensors", "optimizer-step000010.safetensors", "state-step000010.json"] {
            try FileManager.default.copyItem(at: aDir.appendingPathComponent(f), to: bDir.appendingPathComponent(f))
        }
        b.stepsDone = 10
        try store.updateRun(b)
        let r = try CLI.run(["train", "robo", "--resume"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("resuming run \(b.id!) from step 10"), r.stdout)
        let resumedLosses = Self.losses(r.stdout)
        XCTAssertEqual(resumedLosses.count, 10)
        XCTAssertEqual(resumedLosses, Array(Self.losses(a.stdout).suffix(10)), "resumed steps must repeat the uninterrupted run")
        let aFinal = try Data(contentsOf: aDir.appendingPathComponent("lora-step000020.safetensors"))
        let bFinal = try Data(contentsOf: bDir.appendingPathComponent("lora-step000020.safetensors"))
        XCTAssertEqual(aFinal, bFinal)
        XCTAssertEqual(try store.run(id: b.id!)?.status, .finished)
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
