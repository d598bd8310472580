import Foundation
import KoalaImageIO
import KoalaStore
import KoalaTensor
@testable import KoalaApp
@testable import KoalaCLI
import XCTest

/// `train`'s validation images, `checkpoint.keep_last` and the training lock, through
/// the executable on the tiny model.
final class TrainValidationTests: TrainingTestCase {
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
        // A1111's `parameters` names the step's LoRA checkpoint by file name and hash.
        let a1111 = A1111InfotextReader.parse(try XCTUnwrap(chunks["parameters"]))
        XCTAssertEqual(a1111["Prompt"], "a photo of sks toy on the beach <lora:lora-step000030:1>")
        XCTAssertEqual(a1111["Lora hashes"], "lora-step000030: " + Infotext.shortHash(ofLoRA: runDir.appendingPathComponent("lora-step000030.safetensors").path)!)
        XCTAssertEqual([a1111["Steps"], a1111["Sampler"], a1111["Schedule type"], a1111["CFG scale"], a1111["Seed"], a1111["Size-1"]],
                       ["4", "DPM++ 2M", "DDIM", "7.5", "0", "64"])

        // `generate` with the step-30 checkpoint (merged into the weights, not adapters on
        // the side) and the same parameters draws the same image.
        let out = dir.appendingPathComponent("again.png").path
        let g = try CLI.run(["generate", "--subject", "robo", "--run", "\(run.id!)", "--prompt", "a photo of {token} {class} on the beach",
                             "--steps", "4", "--seed", "0", "--width", "64", "--height", "64", "--output", out], environment: env)
        XCTAssertEqual(g.status, 0, g.stderr)
        let validation = try RGBImage.load(path: last), generated = try RGBImage.load(path: out)
        XCTAssertLessThanOrEqual(Self.maxDifference(validation, generated), 2)
        XCTAssertEqual(Set(try Self.text(out).keys).subtracting(chunks.keys), [], "validation PNGs carry every key generate writes")
        XCTAssertEqual(try Self.text(out)["parameters"], chunks["parameters"], "generate --subject names the same checkpoint")

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
        let args = ["--recipe", path, "--model", model, "--learning-rate", "3e-2", "--seed", "1", "--max-steps", "20"]
        // Killed once the step-15 checkpoint has retired the step-5 one.
        let check = try checkKilledRunResumes(args, killAfter: 15, sameFiles: ["lora-step000020.safetensors"],
                                              killWhen: { Self.hasCheckpoint(15, in: $0) && !Self.hasCheckpoint(5, in: $0) },
                                              afterKill: { store, id in XCTAssertEqual(try store.checkpoints(runID: id).map(\.step), [10, 15]) })
        let (store, bID, bDir, r) = (check.store, check.resumedRunID, check.resumedDirectory, check.resumed)
        XCTAssertEqual(try store.checkpoints(runID: bID - 1).map(\.step), [15, 20])
        XCTAssertEqual(try store.checkpoints(runID: bID).map(\.step), [15, 20])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: bDir.path).filter { $0.hasPrefix("state-") }.sorted(),
                       ["state-step000015.json", "state-step000020.json"])
        XCTAssertEqual(Self.lines(r, "validation step ").count, 1, "validation.every = 0 draws at the end only")
    }

    func testDeleteAndASecondTrainAreRefusedWhileTrainingAndNotAfterAKill() throws {
        let p = try startTraining(["--recipe", tinyRecipe, "--model", model, "--max-steps", "500"])
        defer { if p.isRunning { Foundation.kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        let store = try SubjectStore(home: home)
        try wait(for: p) { try (store.runs().first?.stepsDone ?? 0) >= 1 }
        let run = try XCTUnwrap(store.runs().first)
        let pid = p.processIdentifier

        let delete = try CLI.run(["subject", "delete", "robo", "--yes"], environment: env)
        XCTAssertNotEqual(delete.status, 0)
        XCTAssertTrue(delete.stderr.contains("cannot delete robo: it is being trained by run \(run.id!) (process \(pid))"), delete.stderr)
        XCTAssertTrue(delete.stderr.contains("kill -INT \(pid)"), delete.stderr)
        XCTAssertNotNil(try store.subject(named: "robo"))

        let second = try CLI.run(["train", "robo", "--recipe", tinyRecipe, "--model", model], environment: env)
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.stderr.contains("cannot train robo: it is being trained by run \(run.id!)"), second.stderr)
        let resume = try CLI.run(["train", "robo", "--resume"], environment: env)
        XCTAssertNotEqual(resume.status, 0)
        XCTAssertTrue(resume.stderr.contains("cannot train robo"), resume.stderr)
        XCTAssertEqual(try store.runs().count, 1, "a refused train records no run")

        // A killed trainer leaves its run `running`, but its lock died with it.
        Foundation.kill(pid, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(try store.run(id: run.id!)?.status, .running)
        let after = try CLI.run(["subject", "delete", "robo", "--yes"], environment: env)
        XCTAssertEqual(after.status, 0, after.stderr)
        XCTAssertNil(try store.subject(named: "robo"))
    }
}
