import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import XCTest

final class ModelInitTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testTinyInitWritesAFolderThatLoadsExactly() throws {
        let out = dir.appendingPathComponent("tiny").path
        let r = try CLI.run(["model", "init", "--preset", "tiny", "--out", out, "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("random weights"))
        let p = try StableDiffusionXLPipeline.load(from: out)
        let preset = try PipelinePreset.named("tiny")
        XCTAssertEqual(p.unet.config, preset.unet)
        XCTAssertEqual(p.unet.parameterCount, 1_707_364)
        XCTAssertNotNil(p.textEncoder2.textProjection)
        XCTAssertNil(p.textEncoder.textProjection)
        XCTAssertEqual(p.tokenizer2.padTokenID, 0)
        XCTAssertEqual(p.tokenizer.padTokenID, 49407)
        // Same seed, same weights; the loaded values are the written ones.
        let again = UNet2DConditionModel(config: preset.unet, init: ParameterInitializer(seed: 3 &+ 4))
        XCTAssertEqual(p.unet.namedParameters().last!.1.toArray(), again.namedParameters().last!.1.toArray())

        let info = try CLI.run(["model", "info", out])
        XCTAssertTrue(info.stdout.contains("1,707,364"), info.stdout)
    }

    func testFP16VariantIsWrittenAndPickedUp() throws {
        let out = dir.appendingPathComponent("half").path
        XCTAssertEqual(try CLI.run(["model", "init", "--preset", "tiny", "--out", out, "--dtype", "fp16"]).status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/unet/diffusion_pytorch_model.fp16.safetensors"))
        let p = try StableDiffusionXLPipeline.load(from: out)
        let full = UNet2DConditionModel(config: p.unet.config, init: ParameterInitializer(seed: 4))
        let a = p.unet.namedParameters()[0].1.toArray(), b = full.namedParameters()[0].1.toArray()
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-3 * max(1, abs(y))) }
        XCTAssertThrowsError(try StableDiffusionXLPipeline.load(from: out, variant: "bf16")) {
            XCTAssertTrue("\($0)".contains("no diffusion_pytorch_model.bf16.safetensors"), "\($0)")
        }
    }

    func testBadInputsFailClearlyAndLeaveNothingBehind() throws {
        let out = dir.appendingPathComponent("m").path
        let unknown = try CLI.run(["model", "init", "--preset", "huge", "--out", out])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("unknown preset 'huge'"), unknown.stderr)
        let noParent = try CLI.run(["model", "init", "--preset", "tiny", "--out", dir.appendingPathComponent("a/b").path])
        XCTAssertNotEqual(noParent.status, 0)
        XCTAssertTrue(noParent.stderr.contains("does not exist"), noParent.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])

        XCTAssertEqual(try CLI.run(["model", "init", "--preset", "tiny", "--out", out]).status, 0)
        let exists = try CLI.run(["model", "init", "--preset", "tiny", "--out", out])
        XCTAssertNotEqual(exists.status, 0)
        XCTAssertTrue(exists.stderr.contains("already exists"), exists.stderr)
    }

    func testBrokenFoldersNameTheProblem() throws {
        let out = dir.appendingPathComponent("m").path
        XCTAssertEqual(try CLI.run(["model", "init", "--preset", "tiny", "--out", out]).status, 0)
        let unetFile = out + "/unet/diffusion_pytorch_model.safetensors"

        // Truncated weights.
        let data = try Data(contentsOf: URL(fileURLWithPath: unetFile))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: unetFile))
        XCTAssertThrowsError(try StableDiffusionXLPipeline.load(from: out)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }

        // Weights of another shape and a missing key.
        var tensors = Dictionary(uniqueKeysWithValues: UNet2DConditionModel(config: try PipelinePreset.named("tiny").unet,
                                                                             init: .uninitialized()).namedParameters())
        tensors["conv_in.weight"] = Tensor.zeros([1, 1, 1, 1])
        tensors["conv_out.bias"] = nil
        tensors["extra.weight"] = Tensor.zeros([2])
        try SafeTensors.write(tensors, to: unetFile)
        XCTAssertThrowsError(try StableDiffusionXLPipeline.load(from: out)) {
            let m = "\($0)"
            XCTAssertTrue(m.contains("conv_in.weight expects [32, 4, 3, 3], file has [1, 1, 1, 1]"), m)
        }
        tensors["conv_in.weight"] = Tensor.zeros([32, 4, 3, 3])
        try SafeTensors.write(tensors, to: unetFile)
        XCTAssertThrowsError(try StableDiffusionXLPipeline.load(from: out)) {
            let m = "\($0)"
            XCTAssertTrue(m.contains("missing keys (1): conv_out.bias") && m.contains("unexpected keys (1): extra.weight"), m)
        }

        // A component folder gone, and an unsupported config value.
        tensors["conv_out.bias"] = Tensor.zeros([4])
        tensors["extra.weight"] = nil
        try SafeTensors.write(tensors, to: unetFile)
        try FileManager.default.removeItem(atPath: out + "/vae")
        XCTAssertThrowsError(try StableDiffusionXLPipeline.load(from: out)) { XCTAssertTrue("\($0)".contains("vae"), "\($0)") }
        let cfgURL = URL(fileURLWithPath: out + "/unet/config.json")
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: cfgURL)) as! [String: Any]
        cfg["down_block_types"] = ["DownBlock2D", "CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"]
        try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
        XCTAssertThrowsError(try StableDiffusionXLPipeline.loadUNet(PipelineFolder(path: out))) {
            XCTAssertTrue("\($0)".contains("down_block_types"), "\($0)")
        }
    }
}
