import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining
import XCTest

/// `data.aspect_buckets`: the bucket ladder, the choice of bucket, the crop and its
/// micro-conditioning, and a tiny-model trainer fed a non-square photo.
final class AspectBucketTests: XCTestCase {
    func testLadderAt1024IsSDXLs() {
        // The SDXL paper's (appendix) buckets that hold as many pixels as 1024² allows for each width.
        let portrait = [(512, 2048), (576, 1792), (640, 1600), (704, 1472), (768, 1344), (832, 1216), (896, 1152), (960, 1088)]
        var expected = Set(portrait.flatMap { [AspectBucket(width: $0.0, height: $0.1), AspectBucket(width: $0.1, height: $0.0)] })
        expected.insert(AspectBucket(width: 1024, height: 1024))
        XCTAssertEqual(AspectBuckets.step(resolution: 1024, pixelMultiple: 32), 64)
        let ladder = AspectBuckets.ladder(resolution: 1024, step: 64)
        XCTAssertEqual(Set(ladder), expected)
        XCTAssertEqual(ladder.count, expected.count, "no duplicates")
        XCTAssertEqual(ladder.first, AspectBucket(width: 512, height: 2048), "ordered by width")
    }

    func testSmallResolutionsStepByTheModelsMultiple() {
        XCTAssertEqual(AspectBuckets.step(resolution: 64, pixelMultiple: 32), 32)
        XCTAssertEqual(AspectBuckets.step(resolution: 512, pixelMultiple: 32), 64)
        XCTAssertEqual(AspectBuckets.step(resolution: 512, pixelMultiple: 128), 128)
        XCTAssertEqual(AspectBuckets.ladder(resolution: 64, step: 32).map(\.description), ["32x128", "64x64", "128x32"])
        XCTAssertEqual(AspectBuckets.ladder(resolution: 128, step: 32).map(\.description),
                       ["64x256", "96x160", "128x128", "160x96", "256x64"])
        for b in AspectBuckets.ladder(resolution: 520, step: 64) {
            XCTAssertEqual(b.width % 64, 0); XCTAssertEqual(b.height % 64, 0)
            XCTAssertLessThanOrEqual(b.width * b.height, 520 * 520)
        }
    }

    func testPhotosGoToTheBucketNearestTheirAspectRatio() {
        let ladder = AspectBuckets.ladder(resolution: 1024, step: 64)
        func nearest(_ w: Int, _ h: Int) -> String { AspectBuckets.nearest(width: w, height: h, in: ladder).description }
        XCTAssertEqual(nearest(4000, 4000), "1024x1024")
        XCTAssertEqual(nearest(3000, 4000), "896x1152")    // 0.75: 0.778 is nearer than 0.684
        XCTAssertEqual(nearest(4000, 3000), "1152x896")
        XCTAssertEqual(nearest(1920, 1080), "1344x768")    // 1.78 vs 1.75
        XCTAssertEqual(nearest(1000, 500), "1472x704")     // 2.0: 2.09 is nearer than 1.75
        XCTAssertEqual(nearest(10000, 100), "2048x512")    // beyond the ladder: its widest bucket
        let small = AspectBuckets.ladder(resolution: 64, step: 32)
        XCTAssertEqual(AspectBuckets.nearest(width: 200, height: 100, in: small).description, "64x64")   // log 2 vs log 4: a tie, the square wins
        XCTAssertEqual(AspectBuckets.nearest(width: 300, height: 100, in: small).description, "128x32")
        XCTAssertEqual(AspectBuckets.nearest(width: 100, height: 300, in: small).description, "32x128")
    }

    func testPhotoIsResizedToCoverItsBucketAndCroppedWithItsTimeIds() {
        // 300x100 into 128x32: the width decides (128/300 > 32/100), height int(100*128/300) = 42.
        XCTAssertEqual(AspectBuckets.coverSize(width: 300, height: 100, bucket: AspectBucket(width: 128, height: 32)).height, 42)
        XCTAssertEqual(AspectBuckets.coverSize(width: 300, height: 100, bucket: AspectBucket(width: 128, height: 32)).width, 128)
        // 100x300 into 64x64: the width decides, height int(300*64/100) = 192.
        let cover = AspectBuckets.coverSize(width: 100, height: 300, bucket: AspectBucket(width: 64, height: 64))
        XCTAssertEqual([cover.width, cover.height], [64, 192])

        let photo = Self.gradient(width: 300, height: 100)
        var rng = RandomGenerator(seed: 0)
        let img = TrainingImage(photo: photo, bucket: AspectBucket(width: 128, height: 32), centerCrop: true, using: &rng)
        XCTAssertEqual([img.width, img.height, img.cropX, img.cropY], [128, 32, 0, 5])   // round((42 - 32) / 2) = 5
        // original_size (h, w), crops_coords_top_left (y, x), target_size (h, w)
        XCTAssertEqual(img.timeIds.toArray(), [100, 300, 5, 0, 32, 128])
        let expected = photo.resized(width: 128, height: 42).cropped(x: 0, y: 5, width: 128, height: 32).planarFloats()
        XCTAssertEqual(img.pixels, expected)

        var rng2 = RandomGenerator(seed: 3)
        let random = (0..<20).map { _ in TrainingImage(photo: photo, bucket: AspectBucket(width: 128, height: 32), centerCrop: false, using: &rng2).cropY }
        XCTAssertTrue(random.allSatisfy { (0...10).contains($0) }, "\(random)")
        XCTAssertGreaterThan(Set(random).count, 3, "random crops move: \(random)")
    }

    func testPrepareBucketsOnlyWhenAskedAndChecksTheModelsMultiple() throws {
        var data = TrainingRecipe.DataSection()
        data.resolution = 64
        let photos = [Self.gradient(width: 64, height: 64), Self.gradient(width: 300, height: 100)]
        let bucketed = try DreamBoothDataset.prepare(photos, data: data, seed: 0, pixelMultiple: 32)
        XCTAssertEqual(bucketed.map(\.bucket.description), ["64x64", "128x32"])
        XCTAssertEqual(DreamBoothDataset.summary(bucketed), "64x64 ×1, 128x32 ×1")
        data.aspectBuckets = false
        let squares = try DreamBoothDataset.prepare(photos, data: data, seed: 0, pixelMultiple: 32)
        XCTAssertEqual(squares.map(\.bucket.description), ["64x64", "64x64"])
        // The square path is fitAndCrop's (the shorter side to 64, centre crop).
        let fitted = photos[1].fitAndCrop(to: 64, mode: .center)
        XCTAssertEqual(squares[1].pixels, fitted.image.planarFloats())
        XCTAssertEqual([squares[1].cropX, squares[1].cropY], [fitted.cropX, fitted.cropY])
        data.resolution = 72
        XCTAssertThrowsError(try DreamBoothDataset.prepare(photos, data: data, seed: 0, pixelMultiple: 32)) { e in
            XCTAssertTrue("\(e)".contains("multiple of 32"), "\(e)")
        }
    }

    /// A tiny model trained on a square and a 3:1 photo: the 3:1 one trains at 128x32 (a
    /// 16x4 latent) with its size and crop in its time ids, and batches of 2 keep to one bucket.
    func testTrainerEncodesEachPhotoAtItsBucket() throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-buckets-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("tiny").path
        try StableDiffusionXLPipeline.initialize(preset: .named("tiny"), seed: 0, at: model)
        var recipe = TrainingRecipe()
        recipe.data.resolution = 64
        recipe.train.batchSize = 2
        recipe.train.maxSteps = 3
        recipe.checkpoint.every = 0
        recipe.validation.prompts = []
        XCTAssertEqual(try DreamBoothDataset.pixelMultiple(modelPath: model), 32)
        let images = try DreamBoothDataset.prepare([Self.gradient(width: 64, height: 64), Self.gradient(width: 300, height: 100)],
                                                   data: recipe.data, seed: 0, pixelMultiple: 32)
        let trainer = try DreamBoothTrainer(recipe: recipe, modelPath: model, images: images, instancePrompt: "a photo of sks toy")
        XCTAssertEqual(trainer.instance.latents.map(\.mean.shape), [[1, 4, 8, 8], [1, 4, 4, 16]])
        XCTAssertEqual(trainer.instance.timeIds.map { $0.toArray() }, [[64, 64, 0, 0, 64, 64], [100, 300, 5, 0, 32, 128]])
        XCTAssertTrue(trainer.notes.allSatisfy { !$0.contains("aspect") }, "\(trainer.notes)")
        // Mixed-bucket batches could not be concatenated: three steps of batch 2 must run.
        let state = try trainer.train(directory: dir.appendingPathComponent("run"))
        XCTAssertEqual(state.step, 3)
        XCTAssertTrue(state.lastLoss.map { $0.isFinite } ?? false)
    }

    /// A smooth, non-symmetric test photo.
    static func gradient(width: Int, height: Int) -> RGBImage {
        var p = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = 3 * (y * width + x)
                p[i] = UInt8(255 * x / max(width - 1, 1)); p[i + 1] = UInt8(255 * y / max(height - 1, 1)); p[i + 2] = UInt8((x * 7 + y * 3) % 256)
            }
        }
        return RGBImage(width: width, height: height, pixels: p)
    }
}
