import Foundation
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `koalabooth generate --lora` through the executable, against diffusers'
/// `load_lora_weights` image (Tests/Fixtures/lora.safetensors, tools/reference/fixtures_lora.py).
final class LoRAGenerateTests: XCTestCase {
    static var model: String { CLI.tinyModel }
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    static func loraPath(_ name: String) -> String { Fixtures.directory.appendingPathComponent("lora/\(name).safetensors").path }

    /// The fixture script's case: dpm-solver++, 4 steps, 64x64, the pipeline fixture's start latents.
    func generate(_ extra: [String], output: String) throws -> CLIResult {
        let initPath = dir.appendingPathComponent("init.safetensors").path
        try SafeTensors.write(["latents": try Fixtures.open("pipeline").tensor("init_latents")], to: initPath)
        return try CLI.run(["generate", "--model", Self.model, "--prompt", "a photo of a koala wearing sunglasses",
                            "--negative-prompt", "blurry, low quality", "--steps", "4", "--width", "64", "--height", "64",
                            "--latents", initPath, "--output", output] + extra)
    }

    func pixels(_ path: String) throws -> [UInt8] { try RGBImage.load(path: path).pixels }
    func image(_ fixture: String, _ tensor: String) throws -> ArraySlice<Float> { try Fixtures.open(fixture).tensor(tensor).toArray()[...] }

    func testPEFTAndKohyaLoRAsReproduceDiffusersAndAreRecorded() throws {
        for name in ["peft", "kohya"] {
            let out = dir.appendingPathComponent("\(name).png").path
            let r = try generate(["--lora", Self.loraPath(name)], output: out)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stderr.contains("applied LoRA"), r.stderr)
            try assertImageMatches(pixels(out), image("lora", "image"), worst: 4, name)
            // The LoRA matters: without it the image is diffusers' plain one, far from this.
            XCTAssertGreaterThan(imageDifference(try pixels(out), try image("pipeline", "dpm_neg_latents.image")).mean, 3.0, name)
            let text = PNGCodec.readTextOrEmpty(out)
            XCTAssertEqual(text["lora"], Self.loraPath(name))
            XCTAssertEqual(text["lora_scale"], "1.0")
        }
    }

    func testLoRAScaleIsRecordedAndZeroScaleIsThePlainModel() throws {
        let out = dir.appendingPathComponent("zero.png").path
        let r = try generate(["--lora", Self.loraPath("peft"), "--lora-scale", "0"], output: out)
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertImageMatches(pixels(out), image("pipeline", "dpm_neg_latents.image"), worst: 4)
        XCTAssertEqual(PNGCodec.readTextOrEmpty(out)["lora_scale"], "0.0")
    }

    func testBadLoRAFilesFailClearly() throws {
        let out = dir.appendingPathComponent("x.png").path
        var r = try generate(["--lora", dir.appendingPathComponent("none.safetensors").path], output: out)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("does not exist"), r.stderr)

        let sgm = dir.appendingPathComponent("sgm.safetensors").path
        try SafeTensors.write(["lora_unet_middle_block_1_proj_in.lora_down.weight": Tensor.ones([4, 8]),
                               "lora_unet_middle_block_1_proj_in.lora_up.weight": Tensor.ones([8, 4])], to: sgm)
        r = try generate(["--lora", sgm], output: out)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("not supported for KOALA U-Nets"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))

        r = try generate(["--lora-scale", "0.5"], output: out)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--lora-scale needs --lora"), r.stderr)
    }
}
