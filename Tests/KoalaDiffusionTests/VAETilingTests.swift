import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `GenerationParameters.vaeTiling` in text-to-image on the tiny pipeline: `on` draws what
/// diffusers draws with `enable_vae_tiling()`, `off` its untiled default, and `auto` (the
/// default) decodes ordinary sizes whole, bit for bit as `off` (fixture from
/// tools/reference/fixtures_vaetiling.py: 64x96 px, 2x2 tiles of the tiny VAE's 64 px).
final class VAETilingTests: XCTestCase {
    /// Loaded once for the class, on first use.
    nonisolated(unsafe) static let pipeline = TinyPipeline.load()

    /// Mirrors the fixture script's CASES.
    func parameters(_ name: String, _ tiling: VAETiling) -> GenerationParameters {
        var p = GenerationParameters(prompt: "a photo of a koala wearing sunglasses")
        p.negativePrompt = "blurry, low quality"
        p.steps = 4
        p.guidance = 7.5
        p.width = 64
        p.height = 96
        p.vaeTiling = tiling
        if name == "euler_noneg_seed5" {
            p.scheduler = .euler
            p.prompt = "a koala astronaut"
            p.negativePrompt = nil
            p.seed = 5
            p.count = 2
        }
        return p
    }

    func generate(_ name: String, _ tiling: VAETiling) throws -> GenerationResult {
        let noise = name.hasSuffix("_latents") ? try Fixtures.open("vaetiling").tensor("init_latents") : nil
        return try Self.pipeline.generate(parameters(name, tiling), noise: noise)
    }

    func testTilingOnMatchesDiffusersTiledDecode() throws {
        let f = try Fixtures.open("vaetiling")
        for name in ["dpm_neg_latents", "euler_noneg_seed5"] {
            let r = try generate(name, .on)
            assertClose(r.latents, try f.tensor("\(name).latents"), atol: 2e-3, rtol: 2e-3, name)
            let pixels = try GenerateImages.bytes(r)
            let d = assertImageMatches(pixels, try f.tensor("\(name).tiled.image").toArray()[...], worst: TextToImageTests.worstPixel, name)
            print("\(name) tiled: image mean abs diff \(d.mean)/255, worst \(d.worst)/255")
            // The seams are really there: diffusers' untiled picture is another one.
            XCTAssertGreaterThan(imageDifference(pixels, try f.tensor("\(name).untiled.image").toArray()[...]).worst, 8, name)
        }
    }

    func testTilingOffMatchesDiffusersUntiledDecode() throws {
        let f = try Fixtures.open("vaetiling")
        for name in ["dpm_neg_latents", "euler_noneg_seed5"] {
            let r = try generate(name, .off)
            assertImageMatches(try GenerateImages.bytes(r), try f.tensor("\(name).untiled.image").toArray()[...],
                               worst: TextToImageTests.worstPixel, name)
        }
    }

    /// At the tiny model's usual sizes (64 px in the tests, 256 px its native size, and
    /// 64x96, which tiles) plenty of memory is available, so `auto` decodes whole: the very
    /// same numbers as `off`, while `on` changes them wherever the image exceeds a tile.
    func testAutoDecodesOrdinarySizesWholeBitForBit() throws {
        for (width, height) in [(64, 64), (64, 96), (256, 256)] {
            var p = GenerationParameters(prompt: "a koala")
            p.steps = 2
            p.width = width
            p.height = height
            p.seed = 3
            XCTAssertEqual(p.vaeTiling, .auto, "auto is the default")
            let auto = try Self.pipeline.generate(p).images.toArray()
            p.vaeTiling = .off
            let off = try Self.pipeline.generate(p).images.toArray()
            XCTAssertTrue(auto == off, "\(width)x\(height): auto must decode exactly as off")
            p.vaeTiling = .on
            let on = try Self.pipeline.generate(p).images.toArray()
            if max(width, height) > Self.pipeline.vae.tileSampleSize {
                XCTAssertFalse(on == off, "\(width)x\(height) is larger than a tile: tiling must change it")
            } else {
                XCTAssertTrue(on == off, "\(width)x\(height) is one tile: tiling changes nothing")
            }
        }
    }

    /// One image at a time (what `generate` on the command line runs) tiles as the batch does.
    func testImagesOneAtATimeTileAsTheBatch() throws {
        let p = parameters("euler_noneg_seed5", .on)
        let batch = try Self.pipeline.generate(p).images
        var seen = 0
        try Self.pipeline.generateEach(p) { i, _, image in
            seen += 1
            assertClose(image, batch.slice(0, i, i + 1).contiguous(), atol: 5e-3, rtol: 5e-3, "image \(i)")
        }
        XCTAssertEqual(seen, 2)
    }
}
