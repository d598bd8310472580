import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import XCTest

/// The limits `generate` checks before it starts (`GenerationLimits`,
/// `GenerationFootprint`, `SystemMemory`), the one-image-at-a-time generation, and the
/// denoising loop's refusal of non-finite latents.
final class GenerationBoundsTests: XCTestCase {
    /// Loaded once for the class, on first use.
    nonisolated(unsafe) static let pipeline = TinyPipeline.load()

    var pipeline: StableDiffusionXLPipeline { Self.pipeline }

    func testMemoryBoundRefusesWhatDoesNotFitAndSuggestsWhatDoes() throws {
        let fp = pipeline.footprint(guidance: 7.5)
        let needed = fp.workingBytes(width: 1024, height: 1024)
        XCTAssertNoThrow(try pipeline.checkRequest(width: 1024, height: 1024, count: 1, guidance: 7.5, vaeTiling: .off, available: UInt64(needed)))
        XCTAssertThrowsError(try pipeline.checkRequest(width: 1024, height: 1024, count: 1, guidance: 7.5, vaeTiling: .off,
                                                       available: UInt64(needed) - 1)) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("a 1024x1024 image needs about"), text)
            XCTAssertTrue(text.contains("the largest this model can draw in that is about 992x992"), text)
        }
        // The suggested size does fit.
        let side = fp.largestSquareSide(available: needed - 1, multiple: pipeline.sizeMultiple)
        XCTAssertEqual(side, 992)
        XCTAssertNoThrow(try pipeline.checkRequest(width: side, height: side, count: 1, guidance: 7.5, vaeTiling: .off, available: UInt64(needed) - 1))
        // Latents kept for --save-latents count per image.
        let perImage = Double(4 * 128 * 128 * 4)
        XCTAssertThrowsError(try pipeline.checkRequest(width: 1024, height: 1024, count: 10, guidance: 7.5, vaeTiling: .off,
                                                       keptBytesPerImage: perImage, available: UInt64(needed))) {
            XCTAssertTrue("\($0)".contains("with 10 latents kept to save"), "\($0)")
        }
    }

    /// The check counts the decode as tiled where it will be: a size refused whole passes
    /// with tiling on, and `auto` picks tiling exactly when the whole decode is refused.
    func testSizeRefusedWholePassesInTiles() throws {
        let fp = pipeline.footprint(guidance: 7.5)
        let whole = fp.workingBytes(width: 1024, height: 1024, tiled: false)
        let tiled = fp.workingBytes(width: 1024, height: 1024, tiled: true)
        XCTAssertLessThan(tiled, whole / 2, "tiles of 64 px must need far less than the whole 1024 px decode")
        let short = UInt64(whole) - 1
        func check(_ tiling: VAETiling, _ available: UInt64?) throws -> VAETiling {
            try pipeline.checkRequest(width: 1024, height: 1024, count: 1, guidance: 7.5, vaeTiling: tiling, available: available)
        }
        XCTAssertThrowsError(try check(.off, short)) {
            XCTAssertTrue("\($0)".contains("Decoded in VAE tiles it would need about"), "\($0)")
        }
        XCTAssertEqual(try check(.auto, short), .on)
        XCTAssertEqual(try check(.on, short), .on)
        // Enough for the whole decode: auto does not tile; on and off are what they say.
        XCTAssertEqual(try check(.auto, UInt64(whole)), .off)
        XCTAssertEqual(try check(.on, UInt64(whole)), .on)
        XCTAssertEqual(try check(.off, UInt64(whole)), .off)
        // Memory not known (not Linux): nothing is checked, and auto decodes whole.
        XCTAssertEqual(try check(.auto, nil), .off)
        // Not even the tiles fit: refused, and the suggested size is one that fits in tiles.
        XCTAssertThrowsError(try check(.auto, UInt64(tiled) - 1)) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("even with the VAE decoding in tiles"), text)
            XCTAssertTrue(text.contains("the largest this model can draw in that is about 992x992"), text)
            XCTAssertFalse(text.contains("Decoded in VAE tiles it would need"), text)
        }
        XCTAssertEqual(fp.largestSquareSide(available: tiled - 1, multiple: pipeline.sizeMultiple, tiled: true), 992)
        XCTAssertGreaterThan(fp.largestSquareSide(available: whole - 1, multiple: pipeline.sizeMultiple, tiled: true), 1024)
    }

    /// `auto`'s rule, for a batch decoded together: tiles once the images' untiled working
    /// memory (plus what is kept) is more than what is available, and only then.
    func testAutoTilesOnlyWhenTheWholeDecodeDoesNotFit() {
        let whole = pipeline.footprint(guidance: 7.5).workingBytes(width: 512, height: 512, tiled: false)
        func tiles(_ tiling: VAETiling, images: Int = 1, kept: Double = 0, _ available: Double?) -> Bool {
            pipeline.decodesTiled(tiling, width: 512, height: 512, guidance: 7.5, images: images, keptBytes: kept,
                                  available: available.map { UInt64($0) })
        }
        XCTAssertFalse(tiles(.auto, whole))
        XCTAssertTrue(tiles(.auto, whole - 1))
        XCTAssertTrue(tiles(.auto, images: 3, 3 * whole - 1))
        XCTAssertFalse(tiles(.auto, images: 3, 3 * whole))
        XCTAssertTrue(tiles(.auto, kept: 1000, whole))
        XCTAssertFalse(tiles(.auto, nil))
        XCTAssertTrue(tiles(.on, 1e15))
        XCTAssertFalse(tiles(.off, 1))
    }

    func testFixedLimits() {
        XCTAssertThrowsError(try pipeline.checkRequest(width: 4128, height: 64, count: 1, guidance: 1, available: nil)) {
            XCTAssertTrue("\($0)".contains("width 4128 is over the limit of 4096 pixels"), "\($0)")
        }
        XCTAssertThrowsError(try pipeline.checkRequest(width: 64, height: 64, count: 10_001, guidance: 1, available: nil)) {
            XCTAssertTrue("\($0)".contains("over the limit of 10000"), "\($0)")
        }
    }

    /// A full-size model's estimate covers at least its VAE decoder's full-resolution
    /// activations (three float tensors of 128 channels per pixel for SDXL's VAE).
    func testKOALA700MFootprintCoversTheDecoder() throws {
        let fp = GenerationFootprint(unet: try UNet2DConditionConfig.preset("koala-700m"), vae: .sdxl, vaeScaleFactor: 8, guidance: true)
        XCTAssertGreaterThan(fp.bytesPerPixel, 3 * 128 * 4)
        XCTAssertLessThan(fp.bytesPerPixel, 16 * 1024, "a 1024x1024 image must not be refused on a 16 GiB machine")
    }

    /// KOALA-700M in tiles (its VAE's 512 px): a 2048 px image needs a fraction of the
    /// whole decode, because one tile's activations replace the image's; the U-Net phase
    /// then dominates.
    func testKOALA700MTiledFootprint() throws {
        let fp = GenerationFootprint(unet: try UNet2DConditionConfig.preset("koala-700m"), vae: .sdxl, vaeScaleFactor: 8, guidance: true)
        XCTAssertEqual(fp.tileSampleSize, 512)
        let gib = 1024.0 * 1024 * 1024
        let whole = fp.workingBytes(width: 2048, height: 2048, tiled: false), tiled = fp.workingBytes(width: 2048, height: 2048, tiled: true)
        XCTAssertGreaterThan(whole, 12 * gib)
        XCTAssertLessThan(tiled, 4 * gib)
        XCTAssertEqual(tiled, fp.unetBytesPerPixel * 2048 * 2048 + 15 * 2048 * 2048, accuracy: 1,
                       "at 2048 px the U-Net's activations outweigh one 512 px decoder tile")
        // Tiling a 512 px image (one tile) changes nothing.
        XCTAssertEqual(fp.workingBytes(width: 512, height: 512, tiled: true), fp.workingBytes(width: 512, height: 512, tiled: false))
        XCTAssertLessThan(fp.decodeBytes(width: 1024, height: 1024, tiled: true), fp.decodeBytes(width: 1024, height: 1024, tiled: false) / 3)
    }

    func testAvailableMemoryIsReadOnLinux() throws {
        #if os(Linux)
        let bytes = try XCTUnwrap(SystemMemory.availableBytes())
        XCTAssertGreaterThan(bytes, 16 << 20)
        XCTAssertLessThan(bytes, UInt64(ProcessInfo.processInfo.physicalMemory) + 1)
        #endif
    }

    func testFirstNonFiniteIndex() {
        let t = Tensor.zeros([3, 5000])
        XCTAssertNil(t.firstNonFiniteIndex())
        t.data[9000] = .infinity
        t.data[12000] = .nan
        XCTAssertEqual(t.firstNonFiniteIndex(), 9000)
        t.data[9000] = -.greatestFiniteMagnitude
        XCTAssertEqual(t.firstNonFiniteIndex(), 12000)
        XCTAssertEqual(t.transposed(0, 1).firstNonFiniteIndex(), (12000 % 5000) * 3 + 12000 / 5000)
    }

    /// Image by image equals the batch: the same noise rows (both generators), rounding apart.
    func testImagesOneAtATimeMatchTheBatch() throws {
        for rng in RNGKind.allCases {
            var p = GenerationParameters(prompt: "a koala")
            p.steps = 3
            p.width = 64
            p.height = 64
            p.count = 3
            p.seed = 11
            p.rng = rng
            let batch = try pipeline.generate(p)
            var rows: [Int] = []
            try pipeline.generateEach(p) { i, latents, image in
                rows.append(i)
                XCTAssertEqual(latents.shape, [1, 4, 8, 8])
                XCTAssertEqual(image.shape, [1, 3, 64, 64])
                let expected = batch.latents.slice(0, i, i + 1).contiguous().toArray()
                let got = latents.toArray()
                let worst = zip(expected, got).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(worst, 1e-3, "\(rng) image \(i)")
            }
            XCTAssertEqual(rows, [0, 1, 2])
        }
    }

    func testOverflowingGuidanceThrowsNamingTheStep() throws {
        var p = GenerationParameters(prompt: "a koala")
        p.steps = 4
        p.width = 64
        p.height = 64
        p.guidance = 1e38
        XCTAssertThrowsError(try pipeline.generate(p)) { error in
            let e = error as? NonFiniteLatentsError
            XCTAssertNotNil(e, "\(error)")
            XCTAssertEqual(e?.total, 4)
            XCTAssertTrue("\(error)".contains("at denoising step \(e?.step ?? 0) of 4"), "\(error)")
        }
    }
}
