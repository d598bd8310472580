import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import XCTest

/// End-to-end parity with diffusers' StableDiffusionXLPipeline on the tiny pipeline
/// (`model init --preset tiny --seed 0`; fixture from tools/reference/fixtures_pipeline.py).
final class TextToImageTests: XCTestCase {
    /// Worst pixel allowed against diffusers (8-bit units): float32 sums in another order
    /// move a few channel values across a rounding boundary by 1 (seen: 1); a wrong op moves
    /// whole regions by tens.
    static let worstPixel: Float = 4
    /// Loaded once for the class, on first use.
    nonisolated(unsafe) static let pipeline = TinyPipeline.load()

    static let prompt = "a photo of a koala wearing sunglasses"

    /// Mirrors the fixture script's CASES.
    func parameters(_ name: String) -> GenerationParameters {
        var p = GenerationParameters(prompt: Self.prompt)
        p.negativePrompt = "blurry, low quality"
        p.steps = 4
        p.guidance = 7.5
        p.width = 64
        p.height = 64
        p.scheduler = name.hasPrefix("euler") ? .euler : .dpmSolverPlusPlus
        if name.contains("noneg") {
            p.prompt = "a koala astronaut"
            p.negativePrompt = nil
        }
        if name == "dpm_neg_seed42" { p.seed = 42 }
        if name.hasPrefix("dpmkarras") { p.karras = true }
        if name == "euler_noneg_seed7" { p.seed = 7; p.count = 2 }
        return p
    }

    /// Generates a case and compares latents and 8-bit images with diffusers'.
    func check(_ name: String, givenLatents: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let f = try Fixtures.open("pipeline")
        let p = parameters(name)
        let noise = givenLatents ? try f.tensor("init_latents") : nil
        let r = try Self.pipeline.generate(p, noise: noise)
        assertClose(r.latents, try f.tensor("\(name).latents"), atol: 2e-3, rtol: 2e-3, name, file: file, line: line)
        let expected = try f.tensor("\(name).image").toArray()
        let d = assertImageMatches(try GenerateImages.bytes(r), expected[...], worst: Self.worstPixel, name, file: file, line: line)
        print("\(name): image mean abs diff \(d.mean)/255, worst \(d.worst)/255")
    }

    func testDPMSolverWithNegativePromptMatchesDiffusers() throws { try check("dpm_neg_latents", givenLatents: true) }
    func testDPMSolverWithoutNegativePromptZerosTheUnconditionalInput() throws { try check("dpm_noneg_latents", givenLatents: true) }
    func testEulerMatchesDiffusers() throws { try check("euler_neg_latents", givenLatents: true) }
    func testKarrasSigmasMatchDiffusers() throws { try check("dpmkarras_neg_latents", givenLatents: true) }
    func testTorchSeedDrawsWhatDiffusersDraws() throws { try check("dpm_neg_seed42", givenLatents: false) }
    func testTorchSeedWithSeveralImagesDrawsOneBatch() throws { try check("euler_noneg_seed7", givenLatents: false) }

    func testEncodePromptShapesAndZeroNegative() throws {
        let pl = Self.pipeline
        let cond = pl.encodePrompt(["a koala"])
        XCTAssertEqual(cond.hiddenStates.shape, [1, 77, 64])
        XCTAssertEqual(cond.pooled.shape, [1, 32])
        XCTAssertTrue(pl.forceZerosForEmptyPrompt)
        let zero = pl.encodeNegativePrompt(nil, like: cond)
        XCTAssertEqual(zero.hiddenStates.toArray().allSatisfy { $0 == 0 }, true)
        let empty = pl.encodeNegativePrompt("", like: cond)
        XCTAssertFalse(empty.hiddenStates.toArray().allSatisfy { $0 == 0 })
        XCTAssertEqual(pl.addTimeIds(width: 64, height: 48, batch: 2).toArray(), [48, 64, 0, 0, 48, 64, 48, 64, 0, 0, 48, 64])
    }

    func testBadSizesAndLatentsAreClearErrors() throws {
        var p = parameters("dpm_neg_latents")
        p.width = 60
        XCTAssertThrowsError(try Self.pipeline.generate(p)) { XCTAssertTrue("\($0)".contains("multiples of 8"), "\($0)") }
        p.width = 72
        XCTAssertThrowsError(try Self.pipeline.generate(p)) { XCTAssertTrue("\($0)".contains("multiples of 32"), "\($0)") }
        p.width = 64
        XCTAssertThrowsError(try Self.pipeline.generate(p, noise: Tensor.zeros([1, 4, 16, 16]))) {
            XCTAssertTrue("\($0)".contains("1x4x8x8"), "\($0)")
        }
    }

    func testNativeRNGAndGuidanceRescaleRun() throws {
        var p = parameters("dpm_neg_latents")
        p.steps = 2
        p.rng = .native
        let a = try Self.pipeline.generate(p)
        p.rng = .torch
        let b = try Self.pipeline.generate(p)
        XCTAssertNotEqual(a.latents.toArray(), b.latents.toArray())
        p.guidanceRescale = 0.7
        let c = try Self.pipeline.generate(p)
        XCTAssertNotEqual(b.latents.toArray(), c.latents.toArray())
        XCTAssertTrue(c.latents.toArray().allSatisfy(\.isFinite))
        var progress: [Int] = []
        _ = try Self.pipeline.generate(p) { progress.append($0.step) }
        XCTAssertEqual(progress, [1, 2])
    }
}

/// 8-bit RGB as diffusers post-processes (round(clamp(x/2 + 0.5) · 255), half to even),
/// interleaved [count, H, W, 3].
enum GenerateImages {
    static func bytes(_ r: GenerationResult) throws -> [UInt8] {
        let images = r.images.contiguous().toArray()
        let n = r.width * r.height, count = r.images.shape[0]
        var out = [UInt8](repeating: 0, count: count * n * 3)
        for b in 0..<count {
            for i in 0..<n {
                for c in 0..<3 {
                    let v = images[b * 3 * n + c * n + i]
                    out[(b * n + i) * 3 + c] = UInt8((min(max(v / 2 + 0.5, 0), 1) * 255).rounded(.toNearestOrEven))
                }
            }
        }
        return out
    }
}
