import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import XCTest

/// LoRA files written by diffusers/PEFT and in kohya layout (Tests/Fixtures/lora/, from
/// tools/reference/fixtures_lora.py), merged into the tiny pipeline, against the weights
/// diffusers' `fuse_lora(lora_scale=0.5)` makes.
final class LoRALoaderTests: XCTestCase {
    static var modelDir: URL { TinyPipeline.folder }
    var dir: URL!

    override func setUpWithError() throws {
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-lora-t-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func pipeline() throws -> StableDiffusionXLPipeline { try StableDiffusionXLPipeline.load(from: Self.modelDir.path) }

    static func loraPath(_ name: String) -> String {
        Fixtures.directory.appendingPathComponent("lora/\(name).safetensors").path
    }

    func parameters(_ p: StableDiffusionXLPipeline) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (component, module) in p.loraComponents {
            for (k, t) in module.namedParameters() { out["\(component).\(k)"] = t }
        }
        return out
    }

    func snapshot(_ p: StableDiffusionXLPipeline) -> [String: [Float]] { parameters(p).mapValues { $0.toArray() } }

    /// Compares with every `fused.<component>.<key>` tensor of the fixture.
    func assertFusedLikeDiffusers(_ p: StableDiffusionXLPipeline, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let f = try Fixtures.open("lora")
        let params = parameters(p)
        let fused = f.names.filter { $0.hasPrefix("fused.") }
        XCTAssertEqual(fused.count, 6, file: file, line: line)
        for name in fused {
            let key = String(name.dropFirst("fused.".count))
            let ours = try XCTUnwrap(params[key], "\(key) not in the pipeline", file: file, line: line)
            assertClose(ours, try f.tensor(name), atol: 1e-5, rtol: 1e-5, "\(label): \(key)", file: file, line: line)
        }
    }

    func testPEFTFileMergesLikeDiffusersFuseLoRA() throws {
        let p = try pipeline()
        let before = snapshot(p)
        let lora = try p.applyLoRA(path: Self.loraPath("peft"), scale: 0.5)
        XCTAssertEqual(lora.format, .diffusers)
        // 72 U-Net projections (4 per attention × 18) and 4 per layer in both tiny encoders.
        XCTAssertEqual(lora.updates.filter { $0.component == "unet" }.count, 72)
        XCTAssertTrue(lora.updates.allSatisfy { $0.alphaScale == 2 }, "alpha 8 / rank 4 from lora_adapter_metadata")
        try assertFusedLikeDiffusers(p, "peft")
        // Only the targeted weights moved.
        let after = snapshot(p)
        let changed = Set(after.keys.filter { after[$0] != before[$0] })
        XCTAssertEqual(changed, Set(lora.updates.map { "\($0.component).\($0.parameter)" }))
    }

    func testDiffusersAndKohyaFilesGiveThePEFTWeights() throws {
        let reference = try pipeline()
        try reference.applyLoRA(path: Self.loraPath("peft"), scale: 0.5)
        let expected = parameters(reference)
        for (name, format) in [("diffusers", LoRAFileFormat.diffusers), ("kohya", .kohya)] {
            let p = try pipeline()
            let lora = try p.applyLoRA(path: Self.loraPath(name), scale: 0.5)
            XCTAssertEqual(lora.format, format, name)
            try assertFusedLikeDiffusers(p, name)
            for (k, t) in parameters(p) { assertClose(t, expected[k]!, atol: 1e-6, rtol: 1e-6, "\(name): \(k)") }
        }
    }

    func testConvLoRAMergesAsReshapedProduct() throws {
        let p = try pipeline()
        let weight = try XCTUnwrap(p.unet.namedParameters().first { $0.0 == "down_blocks.0.resnets.0.conv1.weight" }?.1)
        let (out, cin, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        let rank = 2
        let down = Tensor.randn([rank, cin, kh, kw], seed: 1), up = Tensor.randn([out, rank, 1, 1], seed: 2)
        let path = dir.appendingPathComponent("conv.safetensors").path
        try SafeTensors.write(["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": down,
                               "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": up,
                               "lora_unet_down_blocks_0_resnets_0_conv1.alpha": Tensor.scalar(1)], to: path)
        let before = weight.toArray(), d = down.toArray(), u = up.toArray()
        try p.applyLoRA(path: path, scale: 0.8)
        var expected = before
        let rest = cin * kh * kw
        for o in 0..<out {
            for j in 0..<rest {
                var s: Float = 0
                for r in 0..<rank { s += u[o * rank + r] * d[r * rest + j] }
                expected[o * rest + j] += 0.8 * 0.5 * s
            }
        }
        assertClose(weight, Tensor(shape: weight.shape, values: expected), atol: 1e-5, rtol: 1e-5)
    }

    /// A broken file must throw `LoRAError` mentioning all of `needles`, and leave every weight as it was.
    func assertRejected(_ tensors: [String: Tensor], metadata: [String: String] = [:], _ needles: [String],
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let path = dir.appendingPathComponent("bad.safetensors").path
        try SafeTensors.write(tensors, to: path, metadata: metadata)
        let p = try pipeline()
        let before = snapshot(p)
        XCTAssertThrowsError(try p.applyLoRA(path: path), file: file, line: line) { error in
            let message = (error as? LoRAError)?.description ?? "\(error)"
            for needle in needles + [path] {
                XCTAssertTrue(message.contains(needle), "expected '\(needle)' in: \(message)", file: file, line: line)
            }
        }
        XCTAssertTrue(snapshot(p) == before, "a rejected LoRA changed weights", file: file, line: line)
    }

    func peftTensors() throws -> ([String: Tensor], [String: String]) {
        let f = try SafeTensorsFile(path: Self.loraPath("peft"))
        return (Dictionary(uniqueKeysWithValues: try f.names.map { ($0, try f.tensor($0)) }), f.metadata)
    }

    func testUnknownKeysAreListedAndNothingIsApplied() throws {
        var (t, meta) = try peftTensors()
        t["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector"] = Tensor.ones([8])
        t["unet.down_blocks.9.attentions.0.proj_in.lora_A.weight"] = Tensor.ones([4, 8])
        t["unet.down_blocks.9.attentions.0.proj_in.lora_B.weight"] = Tensor.ones([8, 4])
        t["vae.decoder.conv_in.lora_A.weight"] = Tensor.ones([4, 8])
        try assertRejected(t, metadata: meta, ["lora_magnitude_vector", "no module down_blocks.9.attentions.0.proj_in in unet",
                                               "no component 'vae'", "nothing was applied"])
    }

    func testMissingHalfAndShapeMismatchAreRejected() throws {
        var (t, meta) = try peftTensors()
        let q = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
        t["\(q).lora_B.weight"] = nil
        try assertRejected(t, metadata: meta, ["\(q).lora_A.weight", "lora_B weight is missing"])

        (t, meta) = try peftTensors()
        let b = t["\(q).lora_B.weight"]!
        t["\(q).lora_B.weight"] = Tensor.ones([b.shape[0] + 1, b.shape[1]])
        try assertRejected(t, metadata: meta, ["does not fit the weight", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"])
    }

    func testSGMLayoutIsRefusedForKOALA() throws {
        try assertRejected(["lora_unet_input_blocks_4_1_proj_in.lora_down.weight": Tensor.ones([4, 8]),
                            "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": Tensor.ones([8, 4]),
                            "lora_unet_input_blocks_4_1_proj_in.alpha": Tensor.scalar(4)],
                           ["SGM", "not supported for KOALA U-Nets"])
    }

    func testMissingFileFailsClearly() throws {
        let p = try pipeline()
        XCTAssertThrowsError(try p.applyLoRA(path: "/nonexistent/x.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("does not exist"), "\(error)")
        }
    }
}
