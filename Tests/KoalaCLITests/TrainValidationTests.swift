import Foundation
import KoalaImageIO
import KoalaStore
import KoalaTensor
import XCTest

/// `train`'s validation images, `checkpoint.keep_last` and the training lock, through
/// the executable on the tiny model.
final class TrainValidationTests: XCTestCase {
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }
    var model: String { dir.appendingPathComponent("tiny").path }
    var env: [String: String] { ["KOALABOOTH_HOME": home.path] }
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var tinyRecipe: URL { Self.root.appendingPathComponent("recipes/tiny.toml") }

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

    /// recipes/tiny.toml with some lines replaced.
    func recipe(_ replacements: [(String, String)]) throws -> String {
        var text = try String(contentsOf: tinyRecipe, encoding: .utf8)
        for (a, b) in replacements {
            XCTAssertEqual(text.components(separatedBy: a).count, 2, "tiny.toml should hold '\(a)' once")
            text = text.replacingOccurrences(of: a, with: b)
        }
        let url = dir.appendingPathComponent("recipe-\(UUID().uuidString).toml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    static func lines(_ stdout: String, _ prefix: String) -> [Substring] {
        stdout.split(separator: "\n").filter { $0.hasPrefix(prefix) }
    }

    static func text(_ path: String) throws -> [String: String] {
        Dictionary(try PNGCodec.readText(path: path).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    }

    static func maxDifference(_ a: RGBImage, _ b: RGBImage) -> Int {
        precondition(a.pixels.count == b.pixels.count)
        return zip(a.pixels, b.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
    }

    func testValidationImagesAreRecordedAndMatchGenerateWhileKeepLastPrunes() throws {
        // Validation and checkpoints every 10 steps, keep_last = 2 (tiny.toml), 30 steps.
        let path = try recipe([("every = 15", "every = 10")])
        let r = try CLI.run(["train", "robo", "--recipe", path, "--model", model, "--max-steps", "30", "--learning-rate", "3e-2", "--seed", "1"],
                            environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertFalse(r.stderr.contains("not drawn"), r.stderr)
        XCTAssertEqual(Self.lines(r.stdout, "validation step ").map { $0.split(separator: " ")[2] }, ["10:", "20:", "30:"], r.stdout)
        XCTAssertEqual(Self.lines(r.stdout, "removed checkpoint step ").map { $0.split(separator: " ")[3] }, ["10"], r.stdout)

        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let run = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        let runDir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        // Only the newest two checkpoints remain, on disk and in the store.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: runDir.path).sorted(),
                       ["lora-step000020.safetensors", "lora-step000030.safetensors", "optimizer-step000020.safetensors",
                        "optimizer-step000030.safetensors", "state-step000020.json", "state-step000030.json", "validation"])
        let checkpoints = try store.checkpoints(runID: run.id!)
        XCTAssertEqual(checkpoints.map(\.step), [20, 30])

        // Every validation image is a generation of the subject, linked to its run and,
        // while it exists, to the checkpoint of its step.
        let generations = try store.generations(subjectID: subject.id!).sorted { $0.id! < $1.id! }
        XCTAssertEqual(generations.map(\.imagePath), [10, 20, 30].map {
            "subjects/\(subject.id!)/runs/\(run.id!)/validation/" + String(format: "step%06d-p1-1.png", $0)
        })
        XCTAssertEqual(generations.map(\.runId), [run.id, run.id, run.id])
        XCTAssertEqual(generations.map(\.checkpointId), [nil, checkpoints[0].id, checkpoints[1].id])
        for g in generations {
            XCTAssertEqual(g.prompt, "a photo of sks toy on the beach")
            XCTAssertEqual([g.steps, g.width, g.height, Int(g.seed)], [4, 64, 64, 0])
            XCTAssertEqual(g.scheduler, "dpm-solver++")
            XCTAssertEqual(g.guidanceScale, 7.5)
        }
        let health = try store.checkHealth()
        XCTAssertEqual(health.foreignKeyViolations, 0)
        XCTAssertEqual(health.fileProblems.map(\.path), [])

        let last = store.url(forRelativePath: generations[2].imagePath).path
        let chunks = try Self.text(last)
        for (key, value) in ["prompt": "a photo of sks toy on the beach", "seed": "0", "steps": "4", "scheduler": "dpm-solver++",
                             "guidance": "7.5", "width": "64", "height": "64", "rng": "torch", "model": model,
                             "subject": "robo", "run": "\(run.id!)", "step": "30", "negative_prompt": ""] {
            XCTAssertEqual(chunks[key], value, key)
        }

        // `generate` with the step-30 checkpoint (merged into the weights, not adapters on
        // the side) and the same parameters draws the same image.
        let out = dir.appendingPathComponent("again.png").path
        let g = try CLI.run(["generate", "--subject", "robo", "--run", "\(run.id!)", "--prompt", "a photo of {token} {class} on the beach",
                             "--steps", "4", "--seed", "0", "--width", "64", "--height", "64", "--output", out], environment: env)
        XCTAssertEqual(g.status, 0, g.stderr)
        let validation = try RGBImage.load(path: last), generated = try RGBImage.load(path: out)
        XCTAssertLessThanOrEqual(Self.maxDifference(validation, generated), 2)
        XCTAssertEqual(Set(try Self.text(out).keys).subtracting(chunks.keys), [], "validation PNGs carry every key generate writes")

        // ... and the trained adapters are in it: the base model draws something else.
        let base = dir.appendingPathComponent("base.png").path
        let b = try CLI.run(["generate", "--model", model, "--prompt", "a photo of sks toy on the beach",
                             "--steps", "4", "--seed", "0", "--width", "64", "--height", "64", "--output", base])
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertGreaterThan(Self.maxDifference(validation, try RGBImage.load(path: base)), 8)
    }

    /// Text-encoder LoRA with prior preservation: the class prompt goes through the
    /// trained encoders too, and the final validation image is drawn with them, so it
    /// equals `generate` with the run's LoRA file (which merges the encoder adapters).
    func testTextEncoderLoRAWithPriorValidatesThroughTheTrainedEncoders() throws {
        let path = try recipe([("targets = [\"attention\"]", "targets = [\"attention\"]\ntext_encoders = true"),
                               ("enabled = false", "enabled = true\nnum_class_images = 1\ngeneration_steps = 2"),
                               ("every = 15", "every = 0")])
        let r = try CLI.run(["train", "robo", "--recipe", path, "--model", model, "--max-steps", "6", "--learning-rate", "3e-2", "--seed", "1"],
                            environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("text encoders"), r.stdout)
        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let run = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        let runDir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        let lora = runDir.appendingPathComponent("lora-step000006.safetensors").path
        let validation = try RGBImage.load(path: runDir.appendingPathComponent("validation/step000006-p1-1.png").path)

        func draw(_ extra: [String], _ name: String) throws -> RGBImage {
            let out = dir.appendingPathComponent(name).path
            let g = try CLI.run(["generate", "--model", model, "--prompt", "a photo of sks toy on the beach",
                                 "--steps", "4", "--seed", "0", "--width", "64", "--height", "64", "--output", out] + extra)
            XCTAssertEqual(g.status, 0, g.stderr)
            return try RGBImage.load(path: out)
        }
        XCTAssertLessThanOrEqual(Self.maxDifference(validation, try draw(["--lora", lora], "lora.png")), 2)
        // Without the encoder adapters the image differs: validation did use them.
        let unetOnly = dir.appendingPathComponent("unet-only.safetensors").path
        let file = try SafeTensorsFile(path: lora)
        let kept = file.names.filter { $0.hasPrefix("unet.") }
        XCTAssertLessThan(kept.count, file.names.count)
        try SafeTensors.write(Dictionary(uniqueKeysWithValues: try kept.map { ($0, try file.tensor($0)) }), to: unetOnly,
                              metadata: file.metadata)
        XCTAssertGreaterThan(Self.maxDifference(validation, try draw(["--lora", unetOnly], "unet-only.png")), 2)
    }

    func testKilledRunResumesAfterKeepLastPruned() throws {
        let path = try recipe([("every = 10", "every = 5"), ("every = 15", "every = 0")])
        let args = ["train", "robo", "--recipe", path, "--model", model, "--learning-rate", "3e-2", "--seed", "1", "--max-steps", "20"]
        let a = try CLI.run(args, environment: env)
        XCTAssertEqual(a.status, 0, a.stderr)
        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let aRun = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        XCTAssertEqual(try store.checkpoints(runID: aRun.id!).map(\.step), [15, 20])

        let p = Process()
        p.executableURL = CLI.executable
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let bID = aRun.id! + 1
        let bDir = store.runDirectory(subjectID: subject.id!, runID: bID)
        func has(_ step: Int) -> Bool {
            FileManager.default.fileExists(atPath: bDir.appendingPathComponent(String(format: "state-step%06d.json", step)).path)
        }
        // Killed once the step-15 checkpoint has retired the step-5 one.
        let deadline = Date().addingTimeInterval(120)
        while !(has(15) && !has(5)) && p.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertTrue(p.isRunning, "the run ended before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(try store.checkpoints(runID: bID).map(\.step), [10, 15])

        let r = try CLI.run(["train", "robo", "--resume"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("resuming run \(bID) from step 15"), r.stdout)
        XCTAssertEqual(TrainTests.losses(r.stdout), Array(TrainTests.losses(a.stdout).suffix(5)))
        let aDir = store.runDirectory(subjectID: subject.id!, runID: aRun.id!)
        XCTAssertEqual(try Data(contentsOf: aDir.appendingPathComponent("lora-step000020.safetensors")),
                       try Data(contentsOf: bDir.appendingPathComponent("lora-step000020.safetensors")))
        XCTAssertEqual(try store.checkpoints(runID: bID).map(\.step), [15, 20])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: bDir.path).filter { $0.hasPrefix("state-") }.sorted(),
                       ["state-step000015.json", "state-step000020.json"])
        XCTAssertEqual(Self.lines(r.stdout, "validation step ").count, 1, "validation.every = 0 draws at the end only")
    }

    func testDeleteAndASecondTrainAreRefusedWhileTrainingAndNotAfterAKill() throws {
        let p = Process()
        p.executableURL = CLI.executable
        p.arguments = ["train", "robo", "--recipe", tinyRecipe.path, "--model", model, "--max-steps", "500"]
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        let store = try SubjectStore(home: home)
        let deadline = Date().addingTimeInterval(120)
        while try p.isRunning && Date() < deadline && (store.runs().first?.stepsDone ?? 0) < 1 { usleep(20_000) }
        XCTAssertTrue(p.isRunning)
        let run = try XCTUnwrap(store.runs().first)
        let pid = p.processIdentifier

        let delete = try CLI.run(["subject", "delete", "robo", "--yes"], environment: env)
        XCTAssertNotEqual(delete.status, 0)
        XCTAssertTrue(delete.stderr.contains("cannot delete robo: it is being trained by run \(run.id!) (process \(pid))"), delete.stderr)
        XCTAssertTrue(delete.stderr.contains("kill -INT \(pid)"), delete.stderr)
        XCTAssertNotNil(try store.subject(named: "robo"))

        let second = try CLI.run(["train", "robo", "--recipe", tinyRecipe.path, "--model", model], environment: env)
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.stderr.contains("cannot train robo: it is being trained by run \(run.id!)"), second.stderr)
        let resume = try CLI.run(["train", "robo", "--resume"], environment: env)
        XCTAssertNotEqual(resume.status, 0)
        XCTAssertTrue(resume.stderr.contains("cannot train robo"), resume.stderr)
        XCTAssertEqual(try store.runs().count, 1, "a refused train records no run")

        // A killed trainer leaves its run `running`, but its lock died with it.
        kill(pid, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(try store.run(id: run.id!)?.status, .running)
        let after = try CLI.run(["subject", "delete", "robo", "--yes"], environment: env)
        XCTAssertEqual(after.status, 0, after.stderr)
        XCTAssertNil(try store.subject(named: "robo"))
    }
}
