import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaModels
import KoalaTensor
import XCTest

/// `koalabooth distill` as a user runs it: a tiny teacher, a student config, captioned
/// images; progress lines, Ctrl-C-style stop and --resume, the output folder generating.
final class DistillCLITests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    static let recipe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("recipes/tiny-distill.toml").path

    func prepare() throws -> (student: String, data: String) {
        var c = try PipelinePreset.named("tiny").unet
        c.transformerLayersPerBlock = .many([.one(1), .one(1), .one(1)])
        let student = dir.appendingPathComponent("student.json")
        try JSONEncoder().encode(c).write(to: student)
        let data = dir.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: false)
        var lines: [String] = []
        for i in 0..<2 {
            let pixels = (0..<(48 * 40 * 3)).map { UInt8(truncatingIfNeeded: $0 * (i + 3)) }
            try RGBImage(width: 48, height: 40, pixels: pixels).writePNG(path: data.appendingPathComponent("\(i).png").path)
            lines.append(#"{"file_name": "\#(i).png", "text": "a photo number \#(i)"}"#)
        }
        try lines.joined(separator: "\n").write(to: data.appendingPathComponent("metadata.jsonl"), atomically: true, encoding: .utf8)
        return (student.path, data.path)
    }

    func testDistilsResumesAndTheOutputGenerates() throws {
        let (student, data) = try prepare()
        let out = dir.appendingPathComponent("koala").path
        let args = ["distill", "--teacher", CLI.tinyModel, "--student", student, "--data", data, "--out", out]
        let missing = try CLI.run(args)
        XCTAssertEqual(missing.status, 64, missing.stderr)
        XCTAssertTrue(missing.stderr.contains("give --recipe FILE"), missing.stderr)

        let r = try CLI.run(args + ["--recipe", Self.recipe])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("encoded 2/2 captioned images"), r.stdout)
        XCTAssertTrue(r.stdout.contains("step 8/8 loss"), r.stdout)
        XCTAssertTrue(r.stdout.contains("checkpoint step 4:"), r.stdout)
        XCTAssertTrue(r.stdout.contains("validation step 4: \(out).run/validation/step000004-p1-1.png \"a photo of a red cube\""), r.stdout)
        XCTAssertTrue(r.stdout.contains("distilled 8 steps"), r.stdout)

        let again = try CLI.run(args + ["--recipe", Self.recipe])
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.contains("--out \(out) already exists"), again.stderr)
        let resume = try CLI.run(args + ["--resume", "--out", out + "-2"])
        XCTAssertEqual(resume.status, 1)
        XCTAssertTrue(resume.stderr.contains("holds no distillation run to resume; start one without --resume"), resume.stderr)

        let png = dir.appendingPathComponent("a.png").path
        let g = try CLI.run(["generate", "--model", out, "--prompt", "a photo", "--steps", "2", "--width", "64", "--height", "64",
                             "--output", png])
        XCTAssertEqual(g.status, 0, g.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: png))

        // The last validation image is what `generate` draws with the output and the
        // image's parameters, and its chunks say which student U-Net drew it.
        let validation = out + ".run/validation/step000008-p1-1.png"
        let chunks = try PNGCodec.readText(path: validation)
        XCTAssertEqual(chunks.first { $0.key == "unet" }?.value, out + ".run/unet-step000008")
        XCTAssertEqual(chunks.first { $0.key == "step" }?.value, "8")
        let redraw = dir.appendingPathComponent("redraw.png").path
        let same = try CLI.run(["generate", "--model", out, "--prompt", "a photo of a red cube", "--steps", "4", "--width", "64",
                                "--height", "64", "--seed", "0", "--rng", "native", "--output", redraw])
        XCTAssertEqual(same.status, 0, same.stderr)
        XCTAssertEqual(try RGBImage.load(path: validation).pixels, try RGBImage.load(path: redraw).pixels)
    }

    /// SIGKILL at every durable write of a run (`KOALABOOTH_FAULT_KILL_AT_WRITE`), then the
    /// same command with --resume (or without, when the run folder was not made yet):
    /// the output's U-Net equals an uninterrupted run's, and no temporary is left.
    func testAKilledRunResumesToTheSameOutput() throws {
        let (student, data) = try prepare()
        func args(_ out: String) -> [String] {
            ["distill", "--teacher", CLI.tinyModel, "--student", student, "--data", data, "--recipe", Self.recipe, "--out", out]
        }
        let reference = dir.appendingPathComponent("reference").path
        let counted = try CLI.run(args(reference), environment: ["KOALABOOTH_FAULT_KILL_AT_WRITE": "0"])
        XCTAssertEqual(counted.status, 0, counted.stderr)
        let points = counted.stderr.split(separator: "\n").filter { $0.hasPrefix("fault point ") }
        XCTAssertEqual(points.count, 10, "\(points)")  // run folder; 2 x (unet, optimizer, state, validation image); output
        let expected = try SafeTensorsFile(path: reference + "/unet/diffusion_pytorch_model.safetensors")

        let runs = concurrently(points.count, width: 4) { i in
            Result { () throws -> (killed: CLIResult, resumed: CLIResult, out: String) in
                let out = self.dir.appendingPathComponent("killed-\(i + 1)").path
                let killed = try CLI.run(args(out), environment: ["KOALABOOTH_FAULT_KILL_AT_WRITE": "\(i + 1)"])
                let started = FileManager.default.fileExists(atPath: out + ".run")
                return (killed, try CLI.run(args(out) + (started ? ["--resume"] : [])), out)
            }
        }
        for (i, run) in runs.enumerated() {
            let (killed, resumed, out) = try run.get()
            XCTAssertEqual(killed.status, SIGKILL, "point \(i + 1): \(killed.stderr) \(killed.stdout)")
            XCTAssertEqual(resumed.status, 0, "point \(i + 1): \(resumed.stderr)")
            let got = try SafeTensorsFile(path: out + "/unet/diffusion_pytorch_model.safetensors")
            XCTAssertEqual(got.names.sorted(), expected.names.sorted())
            for name in expected.names { XCTAssertEqual(try got.tensor(name).toArray(), try expected.tensor(name).toArray(), "point \(i + 1): \(name)") }
            let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".killed-\(i + 1)") }
            XCTAssertEqual(left, [], "point \(i + 1)")
        }
    }
}
