import Foundation
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// A pipeline folder saved by diffusers 0.42 + transformers 5 (tokenizers as
/// tokenizer.json, float16 weights; Tests/Fixtures/hf-folder) drawn through `generate`,
/// against the images diffusers draws from the same folder (Tests/Fixtures/hf_folder.safetensors,
/// tools/reference/fixtures_hf_folder.py).
final class TransformersFolderTests: XCTestCase {
    static let folder = Fixtures.directory.appendingPathComponent("hf-folder").path
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testGenerateFromTheSavedFolderMatchesDiffusers() throws {
        for (name, scheduler, seed) in [("euler_neg_seed42", "euler", 42), ("dpm_neg_seed5", "dpm-solver++", 5)] {
            let out = dir.appendingPathComponent("\(name).png").path
            let r = try CLI.run(["generate", "--model", Self.folder, "--prompt", "a photo of a koala wearing sunglasses",
                                 "--negative-prompt", "blurry, low quality", "--scheduler", scheduler, "--steps", "4",
                                 "--seed", "\(seed)", "--width", "64", "--height", "64", "--output", out])
            XCTAssertEqual(r.status, 0, r.stderr)
            assertImageMatches(try RGBImage.load(path: out).pixels, try Fixtures.open("hf_folder").tensor("\(name).image").toArray()[...],
                               mean: 0.5, worst: 2, name)
        }
    }

    func testModelInfoReadsTheFolder() throws {
        let r = try CLI.run(["model", "info", Self.folder])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("tokenizer_2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("F16"), r.stdout)
    }
}
