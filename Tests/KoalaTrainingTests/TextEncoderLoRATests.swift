import Foundation
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import XCTest
@testable import KoalaTraining

/// Text-encoder LoRA against PEFT 0.21.2, transformers 5 and diffusers 0.42.1
/// (`tools/reference/fixtures_telora.py`): SDXL's prompt embedding through two tiny
/// CLIP encoders with adapters on q/k/v/out_proj, its gradients, and the saved keys.
final class TextEncoderLoRATests: XCTestCase {
    func testEmbeddingsAndAdapterGradientsMatchPEFT() throws {
        let f = try LoRAFixture("telora")
        let (one, net1) = try f.encoder("text_encoder", withProjection: false)
        let (two, net2) = try f.encoder("text_encoder_2", withProjection: true)
        let e = TrainingPromptEncoder.encode(ids: try f.ids("text_encoder"), one, ids2: try f.ids("text_encoder_2"), two)
        assertClose(e.hidden, try f.file.tensor("hidden"), atol: 1e-5, rtol: 1e-4, "hidden")
        assertClose(e.pooled, try f.file.tensor("pooled"), atol: 1e-5, rtol: 1e-4, "pooled")
        let loss = (e.hidden * (try f.file.tensor("r1"))).sum() + (e.pooled * (try f.file.tensor("r2"))).sum()
        assertClose(loss, try f.file.tensor("loss").reshape([]), atol: 1e-4, rtol: 1e-5, "loss")
        loss.backward()
        var compared = 0
        for (name, net) in [("text_encoder", net1), ("text_encoder_2", net2)] {
            for (k, p) in net.namedParameters {
                let key = "\(name).grad.\(f.fixtureKey(name, k))"
                if f.file.entries[key] == nil {
                    // PEFT got no gradient (text_encoder's last layer feeds nothing SDXL uses).
                    XCTAssertTrue(p.grad.map { $0.toArray().allSatisfy { $0 == 0 } } ?? true, "\(name) \(k) should get no gradient")
                    continue
                }
                guard let g = p.grad else { XCTFail("\(name) \(k) got no gradient"); continue }
                assertClose(g, try f.file.tensor(key), atol: 2e-5, rtol: 1e-3, "\(name) \(k)")
                compared += 1
            }
        }
        XCTAssertEqual(compared, f.file.names.filter { $0.contains(".grad.") }.count)
        XCTAssertGreaterThan(compared, 30)
        for (k, p) in one.namedParameters() + two.namedParameters() {
            XCTAssertNil(p.grad, "\(k) must stay frozen")
        }
    }

    /// The keys and shapes diffusers' `save_lora_weights(text_encoder_lora_layers=…,
    /// text_encoder_2_lora_layers=…)` and `convert_state_dict_to_kohya` give, with the
    /// `text_model.` level that real SDXL LoRA files carry (transformers 5 leaves it out
    /// of `CLIPTextModel`'s module paths; diffusers 0.42 loads our files, as
    /// tools/reference/check_trained_lora.py shows).
    func testSavedKeysMatchDiffusersAndKohya() throws {
        let f = try LoRAFixture("telora")
        let nets = [try f.encoder("text_encoder", withProjection: false).1, try f.encoder("text_encoder_2", withProjection: true).1]
        let export = try XCTUnwrap(f.meta["export"] as? [String: Any])
        func normalised(_ t: [String: [Int]], _ level: String) -> [String: [Int]] {
            Dictionary(uniqueKeysWithValues: t.map { ($0.key.replacingOccurrences(of: level, with: ""), $0.value) })
        }
        let ours = { (format: LoRAFileFormat) in LoRAFile(nets).tensors(format: format).mapValues(\.shape) }
        let diffusers = try XCTUnwrap(export["diffusers"] as? [String: [Int]])
        XCTAssertEqual(normalised(ours(.diffusers), "text_model."), normalised(diffusers, "text_model."))
        XCTAssertTrue(ours(.diffusers).keys.allSatisfy { $0.hasPrefix("text_encoder.text_model.encoder.") || $0.hasPrefix("text_encoder_2.text_model.encoder.") })
        let kohya = try XCTUnwrap(export["kohya"] as? [String: [Int]])
        XCTAssertEqual(normalised(ours(.kohya), "text_model_"), normalised(kohya, "text_model_"))

        let metadata = try XCTUnwrap(LoRAFile(nets).metadata(format: .diffusers)["lora_adapter_metadata"])
        let packed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(metadata.utf8)) as? [String: Any])
        let theirs = try XCTUnwrap(export["lora_adapter_metadata"] as? [String: Any])
        for component in ["text_encoder", "text_encoder_2"] {
            XCTAssertEqual(packed["\(component).r"] as? Int, theirs["\(component).r"] as? Int)
            XCTAssertEqual(packed["\(component).lora_alpha"] as? Double, theirs["\(component).lora_alpha"] as? Double)
            XCTAssertEqual(Set(packed["\(component).target_modules"] as? [String] ?? []), Set(theirs["\(component).target_modules"] as? [String] ?? ["?"]))
        }
    }

    /// Both encoders' adapters in one file, byte for byte as written before the LoRA file
    /// format moved to KoalaModels (see `LoRATests.testWrittenFilesAreByteForByteUnchanged`).
    func testWrittenFilesAreByteForByteUnchanged() throws {
        let f = try LoRAFixture("telora")
        let nets = [try f.encoder("text_encoder", withProjection: false).1, try f.encoder("text_encoder_2", withProjection: true).1]
        let dir = try scratchDirectory(self, prefix: "lora")
        let pinned: [LoRAFileFormat: (bytes: Int, fnv: UInt64)] = [.diffusers: (11032, 0x580e_9696_a957_b283), .kohya: (13064, 0xc2dc_76a3_026c_8a02)]
        for format in LoRAFileFormat.allCases {
            let path = dir.appendingPathComponent("\(format.rawValue).safetensors").path
            try LoRAFile(nets).write(to: path, format: format)
            try LoRATests.assertBytes(path, pinned[format]!, format.rawValue)
        }
    }

    func testSavedTextEncoderAdaptersLoadBack() throws {
        let f = try LoRAFixture("telora")
        let nets = [try f.encoder("text_encoder", withProjection: false).1, try f.encoder("text_encoder_2", withProjection: true).1]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("telora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for format in LoRAFileFormat.allCases {
            let path = dir.appendingPathComponent("\(format.rawValue).safetensors").path
            try LoRAFile(nets).write(to: path, format: format)
            let fresh = [try f.encoder("text_encoder", withProjection: false).1, try f.encoder("text_encoder_2", withProjection: true).1]
            noGrad { for n in fresh { for p in n.parameters { p.assign(Tensor.zeros(p.shape)) } } }
            try LoRAFile.load(path, into: fresh)
            for (a, b) in zip(nets.flatMap(\.parameters), fresh.flatMap(\.parameters)) { XCTAssertEqual(a.toArray(), b.toArray(), format.rawValue) }
        }
    }
}

/// The telora fixture (`fixtures_telora.py`): two CLIP encoders, PEFT's adapters on them.
private extension LoRAFixture {
    var loraConfig: LoRAConfig {
        get throws { try Self.peftConfig(meta["lora"]) }
    }

    /// The encoder with the fixture's weights and adapters holding its LoRA weights.
    func encoder(_ name: String, withProjection: Bool) throws -> (CLIPTextModel, LoRANetwork) {
        let raw = try XCTUnwrap((meta["configs"] as? [String: Any])?[name])
        let config = try JSONDecoder().decode(CLIPTextConfig.self, from: JSONSerialization.data(withJSONObject: raw))
        let m = CLIPTextModel(config: config, withProjection: withProjection, init: .uninitialized())
        let prefix = "\(name).weights."
        let report = try m.load(keys: keys(under: prefix)) { try file.tensor(prefix + $0) }
        XCTAssertTrue(report.isExact, "\(report)")
        let net = try LoRANetwork(attachingTo: m, component: name, config: try loraConfig, seed: 9)
        let expected = keys(under: "\(name).lora.")
        XCTAssertEqual(Set(net.namedParameters.map { fixtureKey(name, $0.0) }), expected, "adapted layers differ from PEFT's")
        try noGrad { for (k, p) in net.namedParameters { p.assign(try file.tensor("\(name).lora.\(fixtureKey(name, k))")) } }
        return (m, net)
    }

    /// transformers 5 leaves the `text_model.` level out of `CLIPTextModel`'s module
    /// paths (not out of `CLIPTextModelWithProjection`'s); ours follow the checkpoint keys.
    func fixtureKey(_ name: String, _ key: String) -> String {
        file.entries["\(name).lora.\(key)"] != nil ? key : String(key.dropFirst("text_model.".count))
    }

    func ids(_ name: String) throws -> [Int] { try file.tensor("\(name).ids").toArray().map { Int($0) } }
}
