import Foundation
import KoalaImageIO
import KoalaStore
import KoalaTestSupport
import XCTest

/// `generate --subject`: the subject's latest finished checkpoint, prompt templating and
/// the generation history, through the executable.
final class SubjectGenerateTests: XCTestCase {
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }
    var model: String { CLI.tinyModel }
    var env: [String: String] { ["KOALABOOTH_HOME": home.path] }

    override func setUpWithError() throws {
        dir = try CLI.temporaryDirectory()
        let photos = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("subjects/robot-toy")
        let jpgs = try FileManager.default.contentsOfDirectory(atPath: photos.path).filter { $0.hasSuffix(".jpg") }.sorted()
            .map { photos.appendingPathComponent($0).path }
        let r = try CLI.run(["subject", "create", "robo", "--class", "toy", "--token", "sks"] + jpgs, environment: env)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func generate(_ args: [String]) throws -> CLIResult {
        try CLI.run(["generate", "--steps", "2", "--width", "64", "--height", "64", "--seed", "5"] + args, environment: env)
    }

    func testSubjectWithoutTrainingIsAClearError() throws {
        let r = try generate(["--subject", "robo", "--prompt", "a photo of {token} {class}"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("no finished training run"), r.stderr)
        let unknown = try generate(["--subject", "nobody", "--prompt", "x"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("nobody"), unknown.stderr)
    }

    func testLatestFinishedLoRACheckpointIsUsedAndRecorded() throws {
        // A finished run with a LoRA checkpoint, as training records it.
        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        var run = try store.createRun(TrainingRun(subjectId: subject.id!, baseModelPath: model, baseModelFingerprint: "test",
                                                  recipe: "tiny", totalSteps: 10))
        let runDir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        try FileManager.default.createDirectory(at: runDir, withIntermediateDirectories: true)
        let lora = runDir.appendingPathComponent("lora-10.safetensors")
        try FileManager.default.copyItem(at: Fixtures.directory.appendingPathComponent("lora/peft.safetensors"), to: lora)
        _ = try store.recordCheckpoint(runID: run.id!, step: 10, kind: .lora, file: lora)
        run.status = .finished
        run.stepsDone = 10
        try store.updateRun(run)

        let r = try generate(["--subject", "robo", "--prompt", "a photo of {token} {class} on the beach"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let written = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("wrote ") }).dropFirst(6)
        XCTAssertTrue(written.hasPrefix(home.path), "images go to the subject's history by default: \(written)")

        // The same picture as the base model with that LoRA and the substituted prompt.
        let direct = dir.appendingPathComponent("direct.png").path
        let d = try generate(["--model", model, "--lora", lora.path, "--prompt", "a photo of sks toy on the beach", "--output", direct])
        XCTAssertEqual(d.status, 0, d.stderr)
        XCTAssertEqual(try RGBImage.load(path: String(written)).pixels, try RGBImage.load(path: direct).pixels)
        XCTAssertNotEqual(try RGBImage.load(path: String(written)).pixels,
                          try { () throws -> [UInt8] in
                              let plain = dir.appendingPathComponent("plain.png").path
                              _ = try generate(["--model", model, "--prompt", "a photo of sks toy on the beach", "--output", plain])
                              return try RGBImage.load(path: plain).pixels
                          }())

        let history = try store.generations(subjectID: subject.id!)
        XCTAssertEqual(history.count, 1)
        XCTAssertEqual(history.first?.prompt, "a photo of sks toy on the beach")
        XCTAssertEqual(history.first?.runId, run.id)
        let text = try PNGCodec.readText(path: String(written))
        XCTAssertTrue(text.contains { $0.key == "subject" && $0.value == "robo" }, "\(text)")
    }
}
