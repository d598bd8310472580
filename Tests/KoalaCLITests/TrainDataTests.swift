import Foundation
import KoalaImageIO
import KoalaStore
import XCTest

/// `koalabooth train` with aspect buckets and prior preservation on the tiny model.
final class TrainDataTests: TrainingTestCase {
    override func subjectPhotos() throws -> [String] {
        // A 3:1 photo beside two square ones: at 64 px it belongs in the 128x32 bucket.
        let wide = dir.appendingPathComponent("wide.png").path
        var p = [UInt8](repeating: 0, count: 768 * 256 * 3)
        for i in 0..<(768 * 256) { p[3 * i] = UInt8(i % 768 / 3); p[3 * i + 1] = UInt8(i / 768); p[3 * i + 2] = 90 }
        try RGBImage(width: 768, height: 256, pixels: p).writePNG(path: wide)
        return try Array(super.subjectPhotos().prefix(2)) + [wide]
    }


    static let prior = ("[prior]\nenabled = false", "[prior]\nenabled = true\nnum_class_images = 2\ngeneration_steps = 2")

    func testNonSquarePhotoTrainsInItsBucket() throws {
        let r = try CLI.run(["train", "robo", "--recipe", recipe([("aspect_buckets = false", "aspect_buckets = true"),
                                                                  ("batch_size = 1", "batch_size = 2")]),
                             "--model", CLI.tinyModel, "--max-steps", "4"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertTrue(r.stdout.contains("buckets: 64x64 ×2, 128x32 ×1"), r.stdout)
        XCTAssertFalse(r.stderr.contains("square"), r.stderr)
        XCTAssertEqual(TrainTests.losses(r.stdout).count, 4, r.stdout)

        let off = try CLI.run(["train", "robo", "--recipe", recipe([]), "--model", CLI.tinyModel, "--max-steps", "1"], environment: env)
        XCTAssertEqual(off.status, 0, off.stderr)
        XCTAssertTrue(off.stdout.contains("buckets: 64x64 ×3"), off.stdout)
    }

    func testPriorPreservationGeneratesCachesAndReusesClassImages() throws {
        let recipe = try recipe([Self.prior])
        let first = try CLI.run(["train", "robo", "--recipe", recipe, "--model", CLI.tinyModel, "--max-steps", "3"], environment: env)
        XCTAssertEqual(first.status, 0, first.stderr + first.stdout)
        XCTAssertTrue(first.stdout.contains("class image 1/2 generated"), first.stdout)
        XCTAssertTrue(first.stdout.contains("class image 2/2 generated"), first.stdout)
        XCTAssertEqual(TrainTests.losses(first.stdout).count, 3)

        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let cache = store.subjectDirectory(subjectID: subject.id!).appendingPathComponent("class-images")
        let keys = try FileManager.default.contentsOfDirectory(atPath: cache.path)
        XCTAssertEqual(keys.count, 1, "\(keys)")
        guard keys.count == 1 else { return }
        let folder = cache.appendingPathComponent(keys[0])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(), ["class-00000.png", "class-00001.png"])
        let image = try RGBImage.load(path: folder.appendingPathComponent("class-00000.png").path)
        XCTAssertEqual([image.width, image.height], [64, 64])
        let bytes = try Data(contentsOf: folder.appendingPathComponent("class-00001.png"))

        // The same subject, model, class prompt and resolution: nothing is generated again.
        let second = try CLI.run(["train", "robo", "--recipe", recipe, "--model", CLI.tinyModel, "--max-steps", "3"], environment: env)
        XCTAssertEqual(second.status, 0, second.stderr + second.stdout)
        XCTAssertFalse(second.stdout.contains("class image 1/"), second.stdout)
        XCTAssertEqual(TrainTests.losses(second.stdout), TrainTests.losses(first.stdout), "same seed, same class images")

        // A missing image is drawn again, the same as before (its seed is train.seed + index).
        try FileManager.default.removeItem(at: folder.appendingPathComponent("class-00001.png"))
        let third = try CLI.run(["train", "robo", "--recipe", recipe, "--model", CLI.tinyModel, "--max-steps", "1"], environment: env)
        XCTAssertEqual(third.status, 0, third.stderr)
        XCTAssertTrue(third.stdout.contains("class image 1/1 generated"), third.stdout)
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("class-00001.png")), bytes)

        // Another class prompt is another cache.
        let other = try self.recipe([("[prior]\nenabled = false", "[prior]\nenabled = true\nnum_class_images = 1\ngeneration_steps = 2\nclass_prompt = \"a {class}\"")])
        let fourth = try CLI.run(["train", "robo", "--recipe", other, "--model", CLI.tinyModel, "--max-steps", "1"], environment: env)
        XCTAssertEqual(fourth.status, 0, fourth.stderr)
        XCTAssertTrue(fourth.stdout.contains("class image 1/1 generated"), fourth.stdout)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache.path).count, 2)
    }

    func testPriorPreservationChangesTheLossAndWeightZeroKeepsTheInstanceLoss() throws {
        // prior_loss_weight = 0 trains on the instance loss alone, but the draws include the
        // class examples, so it is compared with weight 1 only to show that the weight matters.
        let weighted = try CLI.run(["train", "robo", "--recipe", recipe([Self.prior]), "--model", CLI.tinyModel, "--max-steps", "3"],
                                   environment: env)
        XCTAssertEqual(weighted.status, 0, weighted.stderr)
        let zero = try CLI.run(["train", "robo", "--recipe", recipe([(Self.prior.0, Self.prior.1 + "\nprior_loss_weight = 0")]),
                                "--model", CLI.tinyModel, "--max-steps", "3"], environment: env)
        XCTAssertEqual(zero.status, 0, zero.stderr)
        let (a, b) = (TrainTests.losses(weighted.stdout), TrainTests.losses(zero.stdout))
        XCTAssertEqual(a.count, 3)
        XCTAssertEqual(b.count, 3)
        XCTAssertGreaterThan(a[0], b[0], "the same first draws: weight 1 adds the class MSE")
    }

    func testKilledRunWithPriorResumesToTheSameResult() throws {
        let recipe = try recipe([Self.prior, ("every = 10", "every = 5")])
        let base = ["--recipe", recipe, "--model", CLI.tinyModel, "--learning-rate", "3e-2", "--seed", "1", "--max-steps", "10"]
        let check = try checkKilledRunResumes(base, killAfter: 5, sameFiles: ["lora-step000010.safetensors"])
        XCTAssertTrue(check.uninterrupted.contains("class image 2/2 generated"), check.uninterrupted)
    }
}
