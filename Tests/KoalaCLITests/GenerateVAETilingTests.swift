import Foundation
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `generate --vae-tiling auto|on|off` against diffusers with and without
/// `enable_vae_tiling()` (Tests/Fixtures/vaetiling.safetensors,
/// tools/reference/fixtures_vaetiling.py: the tiny model at 64x96 px, whose VAE tiles are
/// 64 px, so tiling changes the picture).
final class GenerateVAETilingTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// The fixture's `dpm_neg_latents` case: DPM-Solver++, 4 steps, from its initial latents.
    func generate(_ name: String, _ extra: [String]) throws -> (CLIResult, String) {
        let latents = dir.appendingPathComponent("init.safetensors").path
        if !FileManager.default.fileExists(atPath: latents) {
            try SafeTensors.write(["latents": try Fixtures.open("vaetiling").tensor("init_latents")], to: latents)
        }
        let out = dir.appendingPathComponent("\(name).png").path
        let r = try CLI.run(["generate", "--model", CLI.tinyModel, "--prompt", "a photo of a koala wearing sunglasses",
                             "--negative-prompt", "blurry, low quality", "--steps", "4", "--width", "64", "--height", "96",
                             "--latents", latents, "--output", out] + extra)
        return (r, out)
    }

    func testOnAndOffDrawWhatDiffusersDrawsWithAndWithoutTiling() throws {
        let f = try Fixtures.open("vaetiling")
        for (setting, expected) in [("on", "tiled"), ("off", "untiled")] {
            let (r, out) = try generate(setting, ["--vae-tiling", setting])
            XCTAssertEqual(r.status, 0, r.stderr)
            assertImageMatches(try RGBImage.load(path: out).pixels, try f.tensor("dpm_neg_latents.\(expected).image").toArray()[...],
                               worst: 4, "--vae-tiling \(setting)")
            XCTAssertEqual(PNGCodec.readTextOrEmpty(out)["vae_tiling"], setting)
        }
    }

    /// Several images, drawn one at a time, each tiled as diffusers tiles its batch.
    func testSeveralImagesAreEachTiled() throws {
        let base = dir.appendingPathComponent("seeded.png").path
        let r = try CLI.run(["generate", "--model", CLI.tinyModel, "--prompt", "a koala astronaut", "--scheduler", "euler",
                             "--steps", "4", "--seed", "5", "--count", "2", "--width", "64", "--height", "96",
                             "--vae-tiling", "on", "--output", base])
        XCTAssertEqual(r.status, 0, r.stderr)
        let expected = try Fixtures.open("vaetiling").tensor("euler_noneg_seed5.tiled.image").toArray()
        let n = 64 * 96 * 3
        for i in 0..<2 {
            let out = dir.appendingPathComponent("seeded-\(i + 1).png").path
            assertImageMatches(try RGBImage.load(path: out).pixels, expected[(i * n)..<((i + 1) * n)], worst: 4, "image \(i + 1)")
        }
    }

    /// The default is auto, and with the memory a test machine has, auto decodes this
    /// size whole: the same file as --vae-tiling off, not the tiled picture.
    func testAutoIsTheDefaultAndDecodesOrdinarySizesWhole() throws {
        let (offRun, off) = try generate("off", ["--vae-tiling", "off"])
        let (autoRun, auto) = try generate("auto", ["--vae-tiling", "auto"])
        let (defaultRun, plain) = try generate("default", [])
        for r in [offRun, autoRun, defaultRun] { XCTAssertEqual(r.status, 0, r.stderr) }
        let offPixels = try RGBImage.load(path: off).pixels
        XCTAssertEqual(try RGBImage.load(path: auto).pixels, offPixels)
        XCTAssertEqual(try RGBImage.load(path: plain).pixels, offPixels)
        XCTAssertEqual(PNGCodec.readTextOrEmpty(plain)["vae_tiling"], "off", "the PNG records what auto chose")
        XCTAssertGreaterThan(imageDifference(offPixels, try Fixtures.open("vaetiling").tensor("dpm_neg_latents.tiled.image").toArray()[...]).worst, 8)
    }

    func testUnknownSettingIsRefusedListingTheChoices() throws {
        let (r, out) = try generate("bad", ["--vae-tiling", "sometimes"])
        XCTAssertEqual(r.status, 64, r.stderr)
        for word in ["--vae-tiling", "sometimes", "auto", "on", "off"] {
            XCTAssertTrue(r.stderr.contains(word), "expected '\(word)' in: \(r.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
