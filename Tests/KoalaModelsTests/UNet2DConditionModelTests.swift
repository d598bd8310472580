import Foundation
import XCTest
import KoalaTensor
import KoalaTestSupport
@testable import KoalaModels

/// Parity with diffusers 0.42.1 (`tools/reference/fixtures_unet.py`): case "a" has
/// KOALA-700M's structure, "b" KOALA-1B/SDXL's (mid block), "c" SD-1.x features
/// (convolutional projections, no addition embedding). Tolerance: atol 1e-5 + rtol
/// 1e-4 on outputs of mean magnitude ~0.3.
class UNet2DConditionModelTests: XCTestCase {
    private func load(_ name: String) throws -> (UNet2DConditionModel, SafeTensorsFile, LoadReport) {
        let f = try Fixtures.open("unet")
        let config = try JSONDecoder().decode(UNet2DConditionConfig.self, from: try diffusersConfig(name))
        let model = UNet2DConditionModel(config: config, init: .uninitialized())
        let prefix = "\(name).weights."
        let keys = Set(f.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
        let report = try model.load(keys: keys) { try f.tensor(prefix + $0) }
        return (model, f, report)
    }

    /// diffusers' own config.json text for a fixture case.
    private func diffusersConfig(_ name: String) throws -> Data {
        let all = try XCTUnwrap(try Fixtures.open("unet").metadata["configs"])
        let configs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(all.utf8)) as? [String: Any])
        return try JSONSerialization.data(withJSONObject: try XCTUnwrap(configs[name]))
    }

    private func timesteps(_ f: SafeTensorsFile, _ name: String) throws -> [Float] {
        try f.tensor("\(name).timestep").toArray()
    }

    private func forward(_ m: UNet2DConditionModel, _ f: SafeTensorsFile, _ name: String,
                         sample: Tensor? = nil, ehs: Tensor? = nil, textEmbeds: Tensor? = nil) throws -> Tensor {
        let hasText = f.entries["\(name).text_embeds"] != nil
        return m(sample: try sample ?? f.tensor("\(name).sample"), timestep: try timesteps(f, name),
                 encoderHiddenStates: try ehs ?? f.tensor("\(name).encoder_hidden_states"),
                 textEmbeds: hasText ? try textEmbeds ?? f.tensor("\(name).text_embeds") : nil,
                 timeIds: hasText ? try f.tensor("\(name).time_ids") : nil)
    }

    func testForwardMatchesDiffusers() throws {
        for name in ["a", "b", "c"] {
            let (m, f, report) = try load(name)
            XCTAssertTrue(report.isExact, "\(name): \(report)")
            let out = try noGrad { try forward(m, f, name) }
            assertClose(out, try f.tensor("\(name).out"), atol: 1e-5, rtol: 1e-4, "case \(name) output")
        }
    }

    func testStateDictKeysAreDiffusersKeys() throws {
        let f = try Fixtures.open("unet")
        for name in ["a", "b", "c"] {
            let (m, _, report) = try load(name)
            XCTAssertTrue(report.isExact, "\(name): \(report)")
            let prefix = "\(name).weights."
            XCTAssertEqual(Set(m.namedParameters().map(\.0)),
                           Set(f.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }))
        }
    }

    func testGradientsMatchDiffusers() throws {
        let (m, f, _) = try load("a")
        let sample = try f.tensor("a.sample"), ehs = try f.tensor("a.encoder_hidden_states")
        let text = try f.tensor("a.text_embeds")
        for t in [sample, ehs, text] { t.requiresGrad = true }
        m.setRequiresGrad(true)
        let out = try forward(m, f, "a", sample: sample, ehs: ehs, textEmbeds: text)
        out.backward(try f.tensor("a.grad_out"))
        assertClose(try XCTUnwrap(sample.grad), try f.tensor("a.grad_sample"), atol: 1e-4, rtol: 1e-3, "grad sample")
        assertClose(try XCTUnwrap(ehs.grad), try f.tensor("a.grad_encoder_hidden_states"), atol: 1e-4, rtol: 1e-3, "grad context")
        assertClose(try XCTUnwrap(text.grad), try f.tensor("a.grad_text_embeds"), atol: 1e-4, rtol: 1e-3, "grad text embeds")
        let params = Dictionary(uniqueKeysWithValues: m.namedParameters())
        let names = f.names.filter { $0.hasPrefix("a.grad.") }
        XCTAssertGreaterThan(names.count, 10)
        for key in names {
            let p = String(key.dropFirst("a.grad.".count))
            let g = try XCTUnwrap(params[p]?.grad, "no gradient for \(p)")
            assertClose(g, try f.tensor(key), atol: 1e-4, rtol: 1e-3, "grad \(p)")
        }
    }

    func testGradientCheckpointingGivesTheSameGradients() throws {
        let (m, f, _) = try load("b")
        func grads(checkpointing: Bool) throws -> [String: [Float]] {
            m.gradientCheckpointing = checkpointing
            for (_, p) in m.namedParameters() { p.requiresGrad = true; p.grad = nil }
            let sample = try f.tensor("b.sample"), ehs = try f.tensor("b.encoder_hidden_states")
            sample.requiresGrad = true
            ehs.requiresGrad = true
            let out = try forward(m, f, "b", sample: sample, ehs: ehs)
            out.backward(Tensor.randn(out.shape, seed: 3))
            var result = ["sample": sample.grad!.toArray(), "ehs": ehs.grad!.toArray(), "out": out.toArray()]
            for (k, p) in m.namedParameters() { result[k] = p.grad?.toArray() }
            return result
        }
        let plain = try grads(checkpointing: false)
        let checkpointed = try grads(checkpointing: true)
        XCTAssertEqual(plain.count, m.namedParameters().count + 3)
        for (k, v) in plain {
            let w = try XCTUnwrap(checkpointed[k], "\(k) missing with checkpointing")
            // Summation order differs (gradients reach shared tensors in another order),
            // so compare against the tensor's scale rather than element by element.
            let scale = v.map(abs).max() ?? 0
            let worst = zip(v, w).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-5 * scale, "\(k) differs with checkpointing")
        }
    }

    func testPresetParameterCountsAreExact() throws {
        let expected = ["koala-700m": 782_822_724, "koala-1b": 1_161_184_324, "sdxl-base": 2_567_463_684, "tiny": 1_707_364,
                        "tiny-sdxl": 4_466_372]
        for (name, count) in expected {
            let m = UNet2DConditionModel(config: try .preset(name), init: .uninitialized())
            XCTAssertEqual(m.parameterCount, count, name)
        }
    }

    func testPresetsRoundTripThroughJSON() throws {
        for name in UNet2DConditionConfig.presetNames {
            let c = try UNet2DConditionConfig.preset(name)
            let data = try JSONEncoder().encode(c)
            XCTAssertEqual(try JSONDecoder().decode(UNet2DConditionConfig.self, from: data), c, name)
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            XCTAssertTrue(json.keys.contains("num_attention_heads") && json.keys.contains("class_embed_type"), name)
            XCTAssertEqual(json["_class_name"] as? String, "UNet2DConditionModel")
            // Every key diffusers 0.42.1 writes (its own dump of case "a"'s config).
            let reference = try XCTUnwrap(try JSONSerialization.jsonObject(with: diffusersConfig("a")) as? [String: Any])
            XCTAssertEqual(Set(json.keys), Set(reference.keys)
                .union(["_class_name", "_diffusers_version"]), name)
        }
        XCTAssertThrowsError(try UNet2DConditionConfig.preset("sd15")) { XCTAssertTrue("\($0)".contains("koala-700m"), "\($0)") }
    }

    func testSDXLStyleConfigJSONDecodes() throws {
        let json = """
        {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0.dev0", "act_fn": "silu",
         "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256,
         "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "center_input_sample": false,
         "class_embed_type": null, "class_embeddings_concat": false, "conv_in_kernel": 3, "conv_out_kernel": 3,
         "cross_attention_dim": 2048, "cross_attention_norm": null,
         "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1,
         "dual_cross_attention": false, "encoder_hid_dim": null, "encoder_hid_dim_type": null, "flip_sin_to_cos": true,
         "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_only_cross_attention": null,
         "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
         "norm_num_groups": 32, "num_attention_heads": null, "num_class_embeds": null, "only_cross_attention": false,
         "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
         "resnet_skip_time_act": false, "resnet_time_scale_shift": "default", "sample_size": 128,
         "time_cond_proj_dim": null, "time_embedding_act_fn": null, "time_embedding_dim": null,
         "time_embedding_type": "positional", "timestep_post_act": null, "transformer_layers_per_block": [1, 2, 10],
         "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": null,
         "use_linear_projection": true, "dropout": 0.0}
        """
        XCTAssertEqual(try JSONDecoder().decode(UNet2DConditionConfig.self, from: Data(json.utf8)), .sdxlBase)
    }

    func testUnsupportedConfigValuesAreErrorsNamingTheKey() throws {
        let base = try JSONSerialization.jsonObject(with: JSONEncoder().encode(UNet2DConditionConfig.tiny)) as! [String: Any]
        let cases: [(String, Any)] = [
            ("down_block_types", ["DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D"]),
            ("up_block_types", ["CrossAttnUpBlock2D", "UpBlock2D"]),
            ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
            ("class_embed_type", "timestep"),
            ("time_cond_proj_dim", 256),
            ("encoder_hid_dim_type", "text_proj"),
            ("encoder_hid_dim", 64),
            ("dual_cross_attention", true),
            ("resnet_time_scale_shift", "scale_shift"),
            ("num_attention_heads", 4),
            ("only_cross_attention", true),
            ("addition_embed_type", "text"),
            ("act_fn", "gelu"),
            ("dropout", 0.1),
            ("attention_head_dim", [2, 4]),
            ("transformer_layers_per_block", [[1, 1], [1], [2]]),
            ("norm_num_groups", 5),
            ("block_out_channels", "wide"),
        ]
        for (key, value) in cases {
            var json = base
            json[key] = value
            let data = try JSONSerialization.data(withJSONObject: json)
            XCTAssertThrowsError(try JSONDecoder().decode(UNet2DConditionConfig.self, from: data), key) { error in
                XCTAssertTrue(error is ModelConfigError, "\(key): \(error)")
                XCTAssertTrue("\(error)".contains("'\(key)'") || (key == "transformer_layers_per_block" && "\(error)".contains("reverse_transformer_layers_per_block")),
                              "\(key): \(error)")
            }
        }
        // Values diffusers would also accept and that change nothing here are fine.
        for (key, value) in [("upcast_attention", true as Any), ("only_cross_attention", [false, false, false]),
                             ("mid_block_only_cross_attention", false), ("dropout", 0)] {
            var json = base
            json[key] = value
            XCTAssertNoThrow(try JSONDecoder().decode(UNet2DConditionConfig.self, from: JSONSerialization.data(withJSONObject: json)), key)
        }
    }

    func testTinyPresetRunsAtBatchTwo() throws {
        let m = UNet2DConditionModel(config: .tiny, init: ParameterInitializer(seed: 5))
        let out = noGrad {
            m(sample: Tensor.randn([2, 4, 8, 8], seed: 1), timestep: [500],
              encoderHiddenStates: Tensor.randn([2, 77, 64], seed: 2), textEmbeds: Tensor.randn([2, 32], seed: 3),
              timeIds: Tensor(shape: [2, 6], values: [64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64]))
        }
        XCTAssertEqual(out.shape, [2, 4, 8, 8])
        XCTAssertTrue(out.toArray().allSatisfy { $0.isFinite })
    }
}
