import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import XCTest

/// The limits `generate` checks before it starts (`GenerationLimits`,
/// `GenerationFootprint`, `SystemMemory`), the one-image-at-a-time generation, and the
/// denoising loop's refusal of non-finite latents.
final class GenerationBoundsTests: XCTestCase {
    nonisolated(unsafe) static var pipeline: StableDiffusionXLPipeline!
    nonisolated(unsafe) static var root: URL!

    override class func setUp() {
        super.setUp()
        root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-bounds-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let dir = root.appendingPathComponent("tiny").path
        try! StableDiffusionXLPipeline.initialize(preset: try! PipelinePreset.named("tiny"), seed: 0, at: dir)
        pipeline = try! StableDiffusionXLPipeline.load(from: dir)
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(at: root)
        super.tearDown()
    }

    var pipeline: StableDiffusionXLPipeline { Self.pipeline }

    func testMemoryBoundRefusesWhatDoesNotFitAndSuggestsWhatDoes() throws {
        let fp = pipeline.footprint(guidance: 7.5)
        let needed = fp.workingBytes(width: 1024, height: 1024)
        XCTAssertNoThrow(try pipeline.checkRequest(width: 1024, height: 1024, count: 1, guidance: 7.5, available: UInt64(needed)))
        XCTAssertThrowsError(try pipeline.checkRequest(width: 1024, height: 1024, count: 1, guidance: 7.5, available: UInt64(needed) - 1)) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("a 1024x1024 image needs about"), text)
            XCTAssertTrue(text.contains("the largest this model can draw in that is about 992x992"), text)
        }
        // The suggested size does fit.
        let side = fp.largestSquareSide(available: needed - 1, multiple: pipeline.sizeMultiple)
        XCTAssertEqual(side, 992)
        XCTAssertNoThrow(try pipeline.checkRequest(width: side, height: side, count: 1, guidance: 7.5, available: UInt64(needed) - 1))
        // Latents kept for --save-latents count per image.
        let perImage = Double(4 * 128 * 128 * 4)
        XCTAssertThrowsError(try pipeline.checkRequest(width: 1024, height: 1024, count: 10, guidance: 7.5, keptBytesPerImage: perImage,
                                                       available: UInt64(needed))) {
            XCTAssertTrue("\($0)".contains("with 10 latents kept to save"), "\($0)")
        }
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
