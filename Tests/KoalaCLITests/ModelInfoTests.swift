import Foundation
import KoalaTensor
import XCTest

final class ModelInfoTests: XCTestCase {
    func testHelpIsAvailableEverywhere() throws {
        for args in [["--help"], ["model", "--help"], ["model", "info", "--help"]] {
            let r = try CLI.run(args)
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains("USAGE"), "\(args)")
        }
    }

    func testInfoCountsParametersFromSafetensorsHeaders() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let index = #"{"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}"#
        try index.write(to: dir.appendingPathComponent("model_index.json"), atomically: true, encoding: .utf8)
        let unet = dir.appendingPathComponent("unet")
        try FileManager.default.createDirectory(at: unet, withIntermediateDirectories: true)
        try SafeTensors.write(["a": Tensor.zeros([3, 4]), "b": Tensor.zeros([5])],
                              to: unet.appendingPathComponent("diffusion_pytorch_model.fp16.safetensors").path, dtype: .F16)
        let r = try CLI.run(["model", "info", dir.path, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let infos = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        let u = infos.first { $0["name"] as? String == "unet" }!
        XCTAssertEqual(u["parameters"] as? Int, 17)
        XCTAssertEqual(u["bytesOnDisk"] as? Int, 34)
        XCTAssertEqual((u["dtypes"] as? [String: Int])?["F16"], 2)
        let table = try CLI.run(["model", "info", dir.path])
        XCTAssertTrue(table.stdout.contains("total parameters: 17"), table.stdout)
    }

    func testMissingFolderAndMissingIndexAreClearErrors() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = try CLI.run(["model", "info", dir.appendingPathComponent("nope").path])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("does not exist"), missing.stderr)
        XCTAssertTrue(missing.stderr.contains("model init"), missing.stderr)
        let noIndex = try CLI.run(["model", "info", dir.path])
        XCTAssertNotEqual(noIndex.status, 0)
        XCTAssertTrue(noIndex.stderr.contains("model_index.json is missing"), noIndex.stderr)
    }
}
