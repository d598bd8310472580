import Foundation
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `koalabooth generate` through the built executable, against diffusers' images
/// (Tests/Fixtures/pipeline.safetensors, from tools/reference/fixtures_pipeline.py).
final class GenerateTests: XCTestCase {
    static var model: String { CLI.tinyModel }
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    static let prompt = "a photo of a koala wearing sunglasses"
    static let negative = "blurry, low quality"

    func generate(_ extra: [String], prompt: String = GenerateTests.prompt) throws -> CLIResult {
        try CLI.run(["generate", "--model", Self.model, "--prompt", prompt, "--steps", "4", "--width", "64", "--height", "64"] + extra)
    }

    /// A written image against the fixture's (mean and worst pixel, in 8-bit units).
    func assertMatches(_ path: String, _ fixture: String, index: Int = 0, file: StaticString = #filePath, line: UInt = #line) throws {
        let image = try RGBImage.load(path: path)
        let expected = try Fixtures.open("pipeline").tensor(fixture).toArray()
        let n = 64 * 64 * 3
        assertImageMatches(image.pixels, expected[index * n..<(index + 1) * n], worst: 4, "\(path) vs \(fixture)[\(index)]",
                           file: file, line: line)
    }

    func testTorchSeedReproducesDiffusersAndPNGCarriesTheParameters() throws {
        let out = dir.appendingPathComponent("koala.png").path
        let r = try generate(["--negative-prompt", Self.negative, "--seed", "42", "--rng", "torch", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("step 4/4"), r.stderr)
        XCTAssertTrue(r.stderr.contains("ETA"), r.stderr)
        try assertMatches(out, "dpm_neg_seed42.image")

        let text = Dictionary(try PNGCodec.readText(path: out).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(text["prompt"], Self.prompt)
        XCTAssertEqual(text["negative_prompt"], Self.negative)
        XCTAssertEqual(text["seed"], "42")
        XCTAssertEqual(text["steps"], "4")
        XCTAssertEqual(text["scheduler"], "dpm-solver++")
        XCTAssertEqual(text["karras"], "false")
        XCTAssertEqual(text["guidance"], "7.5")
        XCTAssertEqual(text["width"], "64")
        XCTAssertEqual(text["height"], "64")
        XCTAssertEqual(text["rng"], "torch")
        XCTAssertEqual(text["model"], Self.model)
        XCTAssertTrue(text["software"]?.hasPrefix("KoalaBooth ") == true, "\(text)")
    }

    func testGivenLatentsReproduceDiffusersAndSavedLatentsRoundTrip() throws {
        let initPath = dir.appendingPathComponent("init.safetensors").path
        try SafeTensors.write(["latents": try Fixtures.open("pipeline").tensor("init_latents")], to: initPath)
        let out = dir.appendingPathComponent("euler.png").path
        let saved = dir.appendingPathComponent("final.safetensors").path
        let r = try generate(["--negative-prompt", Self.negative, "--scheduler", "euler", "--latents", initPath,
                              "--save-latents", saved, "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertMatches(out, "euler_neg_latents.image")
        let final = try SafeTensorsFile(path: saved).tensor("latents")
        assertClose(final, try Fixtures.open("pipeline").tensor("euler_neg_latents.latents"), atol: 2e-3, rtol: 2e-3)
        XCTAssertEqual(PNGCodec.readTextOrEmpty(out)["latents"], initPath)

        // What --save-latents writes is accepted by --latents.
        let again = try generate(["--latents", saved, "--output", dir.appendingPathComponent("again.png").path])
        XCTAssertEqual(again.status, 0, again.stderr)
    }

    func testSeveralImagesAreNumberedAndMatchDiffusersBatch() throws {
        let out = dir.appendingPathComponent("batch.png").path
        let r = try generate(["--prompt", "a koala astronaut", "--scheduler", "euler", "--seed", "7", "--count", "2", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        for i in 0..<2 {
            try assertMatches(dir.appendingPathComponent("batch-\(i + 1).png").path, "euler_noneg_seed7.image", index: i)
        }
    }

    func testJPEGOnRequest() throws {
        let out = dir.appendingPathComponent("k.jpg").path
        let r = try generate(["--steps", "1", "--output", out, "--jpeg-quality", "90"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: out))
        XCTAssertEqual(Array(bytes.prefix(3)), [0xFF, 0xD8, 0xFF])
        XCTAssertEqual(try RGBImage.load(path: out).width, 64)
    }

    func testBadInputsFailClearly() throws {
        let out = dir.appendingPathComponent("x.png").path
        func fails(_ args: [String], _ needle: String, model: String = GenerateTests.model, file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try CLI.run(["generate", "--model", model, "--prompt", "p", "--steps", "1", "--width", "64", "--height", "64", "--output", out] + args)
            XCTAssertNotEqual(r.status, 0, file: file, line: line)
            XCTAssertTrue(r.stderr.contains(needle), "expected '\(needle)' in: \(r.stderr)", file: file, line: line)
        }
        try fails([], "does not exist", model: dir.appendingPathComponent("nope").path)
        try fails(["--width", "60"], "multiple of 8")
        try fails(["--scheduler", "heun"], "unknown --scheduler 'heun'")
        try fails(["--scheduler", "ddim", "--karras"], "--karras does not apply to ddim")
        try fails(["--rng", "cuda"], "--rng must be torch or native")
        try fails(["--output", dir.appendingPathComponent("missing/x.png").path], "does not exist; create it first")

        let wrong = dir.appendingPathComponent("wrong.safetensors").path
        try SafeTensors.write(["latents": Tensor.zeros([1, 4, 16, 16])], to: wrong)
        try fails(["--latents", wrong], "holds 1x4x16x16 latents")
        let unnamed = dir.appendingPathComponent("unnamed.safetensors").path
        try SafeTensors.write(["noise": Tensor.zeros([1, 4, 8, 8])], to: unnamed)
        try fails(["--latents", unnamed], "no tensor named 'latents'")
        try fails(["--latents", dir.appendingPathComponent("none.safetensors").path], "does not exist")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}

extension PNGCodec {
    static func readTextOrEmpty(_ path: String) -> [String: String] {
        Dictionary(((try? readText(path: path)) ?? []).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    }
}
