import Foundation
import XCTest
@testable import KoalaTraining

/// The two caption conventions of `distill --data`, and the folders they refuse.
final class CaptionedImageFolderTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("captions-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ name: String, _ text: String = "x") throws {
        try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
    }

    func message(_ body: () throws -> Void) -> String {
        do { try body(); XCTFail("no error"); return "" } catch { return "\(error)" }
    }

    func testKohyaSidecarsInFileNameOrder() throws {
        try write("b.png"); try write("b.txt", "a dog\n")
        try write("a.JPG"); try write("a.txt", "a cat")
        try write("notes.md")
        let f = try CaptionedImageFolder(path: dir.path)
        XCTAssertEqual(f.items.map(\.image.lastPathComponent), ["a.JPG", "b.png"])
        XCTAssertEqual(f.items.map(\.caption), ["a cat", "a dog"])
    }

    func testMetadataJSONLDecidesTheImages() throws {
        try write("a.png"); try write("b.png"); try write("a.txt", "ignored")
        try write("metadata.jsonl", #"{"file_name": "b.png", "text": "second"}"# + "\n\n" + #"{"file_name": "a.png", "text": "first"}"# + "\n")
        let f = try CaptionedImageFolder(path: dir.path)
        XCTAssertEqual(f.items.map(\.image.lastPathComponent), ["b.png", "a.png"])
        XCTAssertEqual(f.items.map(\.caption), ["second", "first"])
    }

    func testRefusedFolders() throws {
        XCTAssertTrue(message { _ = try CaptionedImageFolder(path: dir.path + "/nope") }.contains("does not exist"))
        XCTAssertTrue(message { _ = try CaptionedImageFolder(path: dir.path) }.contains("holds no JPEG or PNG images"))
        try write("a.png"); try write("b.png"); try write("b.txt")
        let missing = message { _ = try CaptionedImageFolder(path: dir.path) }
        XCTAssertTrue(missing.contains("1 image in") && missing.contains("(a.png)") && missing.contains(".txt of the same name"), missing)
        try write("metadata.jsonl", #"{"file_name": "b.png", "text": "ok"}"# + "\n" + #"{"file_name": "../etc/passwd", "text": "x"}"#)
        let escape = message { _ = try CaptionedImageFolder(path: dir.path) }
        XCTAssertTrue(escape.contains("line 2") && escape.contains("not a file in"), escape)
        try write("metadata.jsonl", #"{"file": "b.png"}"#)
        XCTAssertTrue(message { _ = try CaptionedImageFolder(path: dir.path) }.contains("line 1 is not a JSON object"))
    }

    func testTheShippedDistillationRecipes() throws {
        let recipes = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("recipes")
        let paper = try DistillationRecipe.load(path: recipes.appendingPathComponent("koala-700m-distill.toml").path)
        XCTAssertEqual(paper.training.data.resolution, 1024)
        XCTAssertEqual(paper.training.optim.optimizer, .adamw)
        XCTAssertEqual(paper.training.optim.learningRate, 1e-5)
        XCTAssertEqual(paper.training.optim.lrScheduler, .constant)
        XCTAssertEqual(paper.training.train.batchSize * paper.training.train.gradientAccumulation, 128)
        XCTAssertEqual(paper.distill.features, .selfAttention)
        XCTAssertEqual(paper.distill.mapping, .saBottom)
        let tiny = try DistillationRecipe.load(path: recipes.appendingPathComponent("tiny-distill.toml").path)
        XCTAssertEqual(tiny.training.model.train, .full)
        XCTAssertLessThanOrEqual(tiny.training.train.maxSteps, 10)
    }
}
