import Foundation
import XCTest
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining

/// Parity with PyTorch autograd, diffusers 0.42.1 and PEFT 0.21.2
/// (`tools/reference/fixtures_loratrain.py`): a tiny KOALA-layout U-Net, the
/// training loss MSE(unet(noisy, t), noise) and its gradients.
final class LoRATests: XCTestCase {
    func testFullFineTuneGradientsMatchTorch() throws {
        let f = try LoRAFixture("loratrain")
        let m = try f.model()
        m.setRequiresGrad(true)
        let loss = try f.loss(m)
        assertClose(loss, try f.file.tensor("full.loss").reshape([]), atol: 1e-6, rtol: 1e-5, "loss")
        loss.backward()
        let params = m.namedParameters()
        XCTAssertEqual(params.count, f.file.names.filter { $0.hasPrefix("full.grad.") }.count)
        for (k, p) in params {
            guard let g = p.grad else { XCTFail("\(k) got no gradient"); continue }
            assertClose(g, try f.file.tensor("full.grad.\(k)"), atol: 2e-6, rtol: 1e-3, k)
        }
    }

    func testLoRAGradientsMatchPEFT() throws {
        let f = try LoRAFixture("loratrain")
        // Checkpointed blocks replay the adapters during backward: same gradients.
        for (name, checkpointing) in [("attn", false), ("wide", false), ("wide", true)] {
            let (m, net) = try f.loraModel(name)
            m.gradientCheckpointing = checkpointing
            let loss = try f.loss(m)
            assertClose(loss, try f.file.tensor("\(name).loss").reshape([]), atol: 1e-6, rtol: 1e-5, "\(name) loss")
            loss.backward()
            for (k, p) in net.namedParameters {
                guard let g = p.grad else { XCTFail("\(name) \(k) got no gradient"); continue }
                assertClose(g, try f.file.tensor("\(name).grad.\(k)"), atol: 2e-6, rtol: 1e-3, "\(name) \(k)")
            }
            for (k, p) in m.namedParameters() {
                XCTAssertFalse(p.requiresGrad, "\(k) must stay frozen")
                XCTAssertNil(p.grad, "\(k) must get no gradient")
            }
            if name == "wide" {
                XCTAssertTrue(net.adapters.contains { if case .conv = $0.kind { return true } else { return false } })
            }
        }
    }

    func testFreshAdaptersLeaveTheModelUnchangedAndDetachRestoresIt() throws {
        let f = try LoRAFixture("loratrain")
        let m = try f.model()
        let base = try noGrad { try f.loss(m) }.item
        let net = try LoRANetwork(attachingTo: m, component: "unet", config: LoRAConfig(rank: 4, alpha: 4), seed: 3)
        // 3 transformer blocks x 2 attentions x (q, k, v, out), as PEFT adapted them.
        XCTAssertEqual(net.adapters.count * 2, f.file.names.filter { $0.hasPrefix("attn.lora.") }.count)
        XCTAssertEqual(net.adapters.count, 24)
        for a in net.adapters {
            XCTAssertTrue(a.up.toArray().allSatisfy { $0 == 0 })
            let bound = 1 / Float(a.down.shape[1]).squareRoot()
            let values = a.down.toArray()
            XCTAssertTrue(values.allSatisfy { abs($0) <= bound })
            XCTAssertGreaterThan(values.map(abs).max()!, bound / 2)
        }
        XCTAssertEqual(try noGrad { try f.loss(m) }.item, base)
        noGrad { for a in net.adapters { a.up.assign(Tensor.full(a.up.shape, 0.5)) } }
        XCTAssertNotEqual(try noGrad { try f.loss(m) }.item, base)
        net.detach()
        XCTAssertEqual(try noGrad { try f.loss(m) }.item, base)
    }

    func testMergedWeightsGiveTheAdaptedOutput() throws {
        let f = try LoRAFixture("loratrain")
        for name in ["attn", "wide"] {
            let (m, net) = try f.loraModel(name)
            let adapted = try noGrad { try f.loss(m) }
            net.mergeAndDetach()
            assertClose(try noGrad { try f.loss(m) }, adapted, atol: 1e-6, rtol: 1e-5, "\(name) merged")
        }
    }

    func testNoMatchingTargetIsAnError() throws {
        let m = try LoRAFixture("loratrain").model()
        XCTAssertThrowsError(try LoRANetwork(attachingTo: m, component: "unet", config: LoRAConfig(rank: 4, alpha: 4, targetModules: ["q_proj"]), seed: 0)) {
            XCTAssertTrue("\($0)".contains("to_q"), "\($0)")
        }
        XCTAssertThrowsError(try LoRAConfig(rank: 0, alpha: 1).validate())
        XCTAssertThrowsError(try LoRAConfig(rank: 4, alpha: 1, dropout: 1).validate())
    }

    func testAdapterGradCheckWithDropout() throws {
        var g = RandomGenerator(seed: 4)
        let layer = Linear(5, 3, init: ParameterInitializer(seed: 2))
        let conv = Conv2d(2, 3, kernelSize: 3, padding: 1, init: ParameterInitializer(seed: 3))
        let cfg = LoRAConfig(rank: 2, alpha: 3, dropout: 0.3)
        let a = LoRAAdapter(path: "l", kind: .linear, inFeatures: 5, outFeatures: 3, kernelSize: 1, config: cfg, generator: &g)
        let c = LoRAAdapter(path: "c", kind: .conv(stride: 1, padding: 1), inFeatures: 2, outFeatures: 3, kernelSize: 3, config: cfg, generator: &g)
        a.dropoutSeed = 11
        c.dropoutSeed = 12
        noGrad {
            a.up.assign(Tensor.randn(a.up.shape, generator: &g))
            c.up.assign(Tensor.randn(c.up.shape, generator: &g))
        }
        layer.adapter = { a($0) }
        conv.adapter = { c($0) }
        gradCheck([Tensor.randn([4, 5], generator: &g), a.down, a.up]) { layer($0[0]) }
        gradCheck([Tensor.randn([1, 2, 4, 4], generator: &g), c.down, c.up]) { conv($0[0]) }

        // Same seed, same mask (checkpoint replay); another seed, another mask; eval: none.
        let x = Tensor.randn([4, 5], generator: &g)
        let y1 = noGrad { a(x) }.toArray(), y2 = noGrad { a(x) }.toArray()
        XCTAssertEqual(y1, y2)
        a.dropoutSeed = 13
        XCTAssertNotEqual(noGrad { a(x) }.toArray(), y1)
        a.training = false
        let plain = noGrad { x.linear(a.down).linear(a.up) * cfg.scale }.toArray()
        for (u, v) in zip(noGrad { a(x) }.toArray(), plain) { XCTAssertEqual(u, v, accuracy: 1e-6 * max(1, abs(v))) }
    }

    func testDiffusersExportMatchesSaveLoraWeights() throws {
        let f = try LoRAFixture("loratrain")
        for name in ["attn", "wide"] {
            let (_, net) = try f.loraModel(name)
            let expected = try f.export(name)
            let shapes = try XCTUnwrap(expected["diffusers"] as? [String: [Int]])
            let tensors = LoRAFile([net]).tensors(format: .diffusers)
            XCTAssertEqual(tensors.mapValues(\.shape), shapes, name)

            let meta = LoRAFile([net]).metadata(format: .diffusers)
            XCTAssertEqual(meta["format"], expected["metadata_format"] as? String)
            let ours = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try XCTUnwrap(meta["lora_adapter_metadata"]).utf8)) as? [String: Any])
            let theirs = try XCTUnwrap(expected["lora_adapter_metadata"] as? [String: Any])
            for (key, value) in ours {
                let ref = try XCTUnwrap(theirs[key], "diffusers writes no \(key)")
                if key.hasSuffix(".target_modules") {
                    XCTAssertEqual(Set(value as! [String]), Set(ref as! [String]), key)  // PEFT keeps a set
                } else {
                    XCTAssertEqual(value as? NSObject, ref as? NSObject, key)
                }
            }
            for key in ["unet.r", "unet.lora_alpha", "unet.target_modules"] { XCTAssertNotNil(ours[key], key) }
        }
    }

    func testKohyaExportMatchesDiffusersConversion() throws {
        let f = try LoRAFixture("loratrain")
        for name in ["attn", "wide"] {
            let (_, net) = try f.loraModel(name)
            let shapes = try XCTUnwrap(try f.export(name)["kohya"] as? [String: [Int]])
            let tensors = LoRAFile([net]).tensors(format: .kohya)
            XCTAssertEqual(tensors.mapValues(\.shape), shapes, name)
            // diffusers' converter writes alpha = rank; kohya's meaning (scale alpha/rank)
            // needs the trained alpha, which we keep.
            for (k, t) in tensors where k.hasSuffix(".alpha") { XCTAssertEqual(t.item, net.config.alpha, k) }
        }
    }

    func testSavedAdaptersLoadBack() throws {
        let f = try LoRAFixture("loratrain")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lora-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, net) = try f.loraModel("wide")
        for format in LoRAFileFormat.allCases {
            let path = dir.appendingPathComponent("\(format).safetensors").path
            try LoRAFile([net]).write(to: path, format: format)
            let fresh = try LoRANetwork(attachingTo: try f.model(), component: "unet", config: net.config, seed: 9)
            try LoRAFile.load(path, into: [fresh])
            for ((k, a), (_, b)) in zip(net.namedParameters, fresh.namedParameters) {
                XCTAssertEqual(a.toArray(), b.toArray(), "\(format) \(k)")
            }
            var other = net.config
            other.rank = 3
            let wrongRank = try LoRANetwork(attachingTo: try f.model(), component: "unet", config: other, seed: 9)
            XCTAssertThrowsError(try LoRAFile.load(path, into: [wrongRank])) { XCTAssertTrue("\($0)".contains("rank"), "\($0)") }
        }
        // tools/reference/check_lora_load.py sets this to load our files with diffusers.
        if let out = ProcessInfo.processInfo.environment["KOALABOOTH_LORA_EXPORT_DIR"] {
            for format in LoRAFileFormat.allCases { try LoRAFile([net]).write(to: "\(out)/\(format).safetensors", format: format) }
        }
        let configs = try LoRAFile.configs(dir.appendingPathComponent("diffusers.safetensors").path)
        XCTAssertEqual(configs["unet"]?.rank, net.config.rank)
        XCTAssertEqual(configs["unet"]?.alpha, net.config.alpha)
        XCTAssertEqual(Set(configs["unet"]?.targetModules ?? []), Set(net.config.targetModules))
        var otherAlpha = net.config
        otherAlpha.alpha = 7
        let wrongAlpha = try LoRANetwork(attachingTo: try f.model(), component: "unet", config: otherAlpha, seed: 9)
        XCTAssertThrowsError(try LoRAFile.load(dir.appendingPathComponent("kohya.safetensors").path, into: [wrongAlpha]))
    }

    /// The generation loader reads what the exporter writes, through the same key codec:
    /// each adapter comes back as one update of its layer's weight, with alpha / rank.
    func testLoaderReadsWhatTheExporterWrites() throws {
        let f = try LoRAFixture("loratrain")
        let dir = try scratchDirectory(self, prefix: "lora")
        let (_, net) = try f.loraModel("wide")
        for format in LoRAFileFormat.allCases {
            let path = dir.appendingPathComponent("\(format.rawValue).safetensors").path
            try LoRAFile([net]).write(to: path, format: format)
            let lora = try LoRA(contentsOf: path, components: ["unet": try f.model()])
            XCTAssertEqual(lora.format, format)
            XCTAssertEqual(lora.updates.count, net.adapters.count, format.rawValue)
            let updates = Dictionary(uniqueKeysWithValues: lora.updates.map { ("\($0.component).\($0.parameter)", $0) })
            for a in net.adapters {
                let u = try XCTUnwrap(updates["unet.\(a.path).weight"], "\(format) \(a.path)")
                XCTAssertEqual(u.down.toArray(), a.down.toArray(), "\(format) \(a.path)")
                XCTAssertEqual(u.up.toArray(), a.up.toArray(), "\(format) \(a.path)")
                XCTAssertEqual(u.alphaScale, net.config.scale, "\(format) \(a.path)")
            }
        }
    }

    /// The bytes of a written file (header, tensor order, metadata text) pinned as the
    /// exporter wrote them before the LoRA file format moved to KoalaModels: diffusers' and
    /// kohya's loaders read exactly these files, so a refactor must not change one byte.
    func testWrittenFilesAreByteForByteUnchanged() throws {
        let f = try LoRAFixture("loratrain")
        let dir = try scratchDirectory(self, prefix: "lora")
        let pinned: [String: (bytes: Int, fnv: UInt64)] = [
            "attn.diffusers": (12872, 0xf301_e13f_a790_035d), "attn.kohya": (16200, 0xa465_e3f2_81ca_745a),
            "wide.diffusers": (24176, 0x2eff_c859_e201_e9be), "wide.kohya": (29752, 0x4edc_ff70_22dd_a969),
        ]
        for name in ["attn", "wide"] {
            let (_, net) = try f.loraModel(name)
            for format in LoRAFileFormat.allCases {
                let path = dir.appendingPathComponent("\(name)-\(format.rawValue).safetensors").path
                try LoRAFile([net]).write(to: path, format: format)
                try Self.assertBytes(path, pinned["\(name).\(format.rawValue)"]!, "\(name) \(format.rawValue)")
            }
        }
    }

    /// Size and 64-bit FNV-1a of a file against `pinned`; on a mismatch the message shows
    /// the file's header, which is where a changed key or metadata entry shows.
    static func assertBytes(_ path: String, _ pinned: (bytes: Int, fnv: UInt64), _ label: String,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = String(decoding: data.dropFirst(8).prefix(headerLength), as: UTF8.self)
        XCTAssertEqual(data.count, pinned.bytes, "\(label): size", file: file, line: line)
        XCTAssertEqual(hash, pinned.fnv, "\(label): FNV-1a 0x\(String(hash, radix: 16)); header \(header)", file: file, line: line)
    }

    /// Text-encoder adapters carry transformers' module paths under the component name,
    /// as `StableDiffusionXLPipeline.save_lora_weights(text_encoder_lora_layers=…)` writes.
    func testTextEncoderKeys() throws {
        var c = CLIPTextConfig()
        c.vocabSize = 10; c.hiddenSize = 8; c.intermediateSize = 16; c.numHiddenLayers = 2; c.numAttentionHeads = 2
        c.maxPositionEmbeddings = 4; c.projectionDim = 4
        let te2 = CLIPTextModel(config: c, withProjection: true, init: ParameterInitializer(seed: 1))
        let net = try LoRANetwork(attachingTo: te2, component: "text_encoder_2",
                                  config: LoRAConfig(rank: 2, alpha: 2, targetModules: LoRAConfig.textEncoderTargets), seed: 0)
        XCTAssertEqual(net.adapters.count, 8)
        let keys = LoRAFile([net]).tensors(format: .diffusers).keys
        XCTAssertTrue(keys.contains("text_encoder_2.text_model.encoder.layers.1.self_attn.out_proj.lora_B.weight"), "\(keys.sorted())")
        XCTAssertTrue(LoRAFile([net]).tensors(format: .kohya).keys.contains("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"))
        XCTAssertTrue(te2.namedParameters().allSatisfy { !$0.1.requiresGrad })
        let out = te2([[0, 3, 9, 9]])
        out.lastHiddenState.sum().backward()
        XCTAssertTrue(net.parameters.allSatisfy { $0.grad != nil })
    }
}

/// The loratrain fixture (`fixtures_loratrain.py`): its base U-Net, adapters and loss.
private extension LoRAFixture {
    func model() throws -> UNet2DConditionModel {
        let cfg = try JSONSerialization.data(withJSONObject: try XCTUnwrap(meta["config"]))
        let m = UNet2DConditionModel(config: try JSONDecoder().decode(UNet2DConditionConfig.self, from: cfg), init: .uninitialized())
        let report = try m.load(keys: keys(under: "weights.")) { try file.tensor("weights." + $0) }
        XCTAssertTrue(report.isExact, "\(report)")
        return m
    }

    func loraConfig(_ name: String) throws -> LoRAConfig {
        try Self.peftConfig((meta["lora"] as? [String: Any])?[name])
    }

    func export(_ name: String) throws -> [String: Any] {
        try XCTUnwrap((meta["export"] as? [String: Any])?[name] as? [String: Any])
    }

    func loss(_ m: UNet2DConditionModel) throws -> Tensor {
        let pred = m(sample: try file.tensor("noisy"), timestep: try file.tensor("timesteps").toArray(),
                     encoderHiddenStates: try file.tensor("encoder_hidden_states"),
                     textEmbeds: try file.tensor("text_embeds"), timeIds: try file.tensor("time_ids"))
        return pred.mseLoss(try file.tensor("noise"))
    }

    /// The base model with the case's adapters holding the fixture's LoRA weights.
    func loraModel(_ name: String) throws -> (UNet2DConditionModel, LoRANetwork) {
        let m = try model()
        let net = try LoRANetwork(attachingTo: m, component: "unet", config: try loraConfig(name), seed: 1)
        let expected = keys(under: "\(name).lora.")
        XCTAssertEqual(Set(net.namedParameters.map(\.0)), expected, "adapted layers differ from PEFT's")
        noGrad { for (k, p) in net.namedParameters { p.assign(try! file.tensor("\(name).lora.\(k)")) } }
        return (m, net)
    }
}
