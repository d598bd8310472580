import XCTest
import KoalaTensor
import KoalaTestSupport
@testable import KoalaModels

/// Parity with diffusers' AutoencoderKL (tools/reference/fixtures_vae.py). Tolerance:
/// atol 1e-4 and rtol 1e-4 on outputs of order 1, in float32.
final class AutoencoderKLTests: XCTestCase {
    /// The fixture's config: two blocks [8, 16], 2 layers, 4 groups, sample_size 8 so
    /// that 16x24 images and 8x12 latents are tiled.
    static var fixtureConfig: AutoencoderKLConfig {
        var c = AutoencoderKLConfig()
        c.blockOutChannels = [8, 16]
        c.downBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D"]
        c.upBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D"]
        c.layersPerBlock = 2
        c.normNumGroups = 4
        c.sampleSize = 8
        c.scalingFactor = 0.5
        return c
    }

    private func model() throws -> (AutoencoderKL, SafeTensorsFile) {
        let f = try Fixtures.open("vae")
        let m = AutoencoderKL(config: Self.fixtureConfig, init: .uninitialized())
        let prefix = "weights."
        let keys = Set(f.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
        let report = try m.load(keys: keys) { try f.tensor(prefix + $0) }
        XCTAssertTrue(report.isExact, report.description)
        return (m, f)
    }

    func testEncodeMatchesDiffusers() throws {
        let (m, f) = try model()
        let posterior = noGrad { m.encode(try! f.tensor("image")) }
        assertClose(posterior.mean, try f.tensor("mean"), atol: 1e-4, rtol: 1e-4, "mean")
        assertClose(posterior.logvar, try f.tensor("logvar"), atol: 1e-4, rtol: 1e-4, "logvar")
        assertClose(posterior.mode(), try f.tensor("mean"), atol: 1e-4, rtol: 1e-4, "mode")
    }

    func testDecodeMatchesDiffusers() throws {
        let (m, f) = try model()
        let out = noGrad { m.decode(try! f.tensor("latents")) }
        assertClose(out, try f.tensor("decoded"), atol: 1e-4, rtol: 1e-4, "decoded")
    }

    func testTiledDecodeMatchesDiffusersTiling() throws {
        let (m, f) = try model()
        XCTAssertEqual(m.tileLatentSize, 4)
        let out = m.decode(try f.tensor("latents"), tiled: true)
        assertClose(out, try f.tensor("tiled.decoded"), atol: 1e-4, rtol: 1e-4, "tiled decode")
    }

    func testTiledEncodeMatchesDiffusersTiling() throws {
        let (m, f) = try model()
        let posterior = m.encode(try f.tensor("image"), tiled: true)
        assertClose(posterior.mean, try f.tensor("tiled.mean"), atol: 1e-4, rtol: 1e-4, "tiled mean")
        assertClose(posterior.logvar, try f.tensor("tiled.logvar"), atol: 1e-4, rtol: 1e-4, "tiled logvar")
    }

    func testDecodeGradientMatchesTorch() throws {
        let (m, f) = try model()
        m.setRequiresGrad(false)
        let z = try f.tensor("grad.latents").copy()
        z.requiresGrad = true
        let out = m.decode(z)
        assertClose(out, try f.tensor("grad.out"), atol: 1e-4, rtol: 1e-4, "decoded")
        (out * (try f.tensor("grad.g"))).sum().backward()
        assertClose(try XCTUnwrap(z.grad), try f.tensor("grad.grad_latents"), atol: 1e-4, rtol: 1e-3, "d/dz sum(decode(z) * g)")
    }

    func testSampleIsMeanPlusStdTimesNoise() throws {
        let (m, f) = try model()
        let posterior = noGrad { m.encode(try! f.tensor("image")) }
        var g1 = RandomGenerator(seed: 5), g2 = RandomGenerator(seed: 5)
        let s = noGrad { posterior.sample(generator: &g1) }
        let eps = Tensor.randn(posterior.mean.shape, generator: &g2)
        let mean = posterior.mean.toArray(), logvar = posterior.logvar.toArray(), e = eps.toArray()
        let expected = (0..<mean.count).map { mean[$0] + Foundation.exp(0.5 * logvar[$0]) * e[$0] }
        assertClose(s, Tensor(shape: s.shape, values: expected), atol: 1e-6, rtol: 1e-5, "sample")
    }

    func testClampMatchesDefinitionAndGradient() {
        let x = Tensor(shape: [5], values: [-40, -30, 0.5, 20, 25], requiresGrad: true)
        let y = x.clamped(min: -30, max: 20)
        XCTAssertEqual(y.toArray(), [-30, -30, 0.5, 20, 20])
        y.backward(Tensor(shape: [5], values: [1, 2, 3, 4, 5]))
        // torch.clamp passes the gradient on the closed interval [min, max].
        XCTAssertEqual(x.grad?.toArray(), [0, 2, 3, 4, 0])
        gradCheck([Tensor.randn([2, 3], seed: 3)]) { $0[0].clamped(min: -0.5, max: 0.5) }
    }

    func testParameterNamesAreDiffusersKeys() {
        let names = Set(AutoencoderKL(config: Self.fixtureConfig, init: ParameterInitializer(seed: 1)).namedParameters().map(\.0))
        for key in ["encoder.down_blocks.0.downsamplers.0.conv.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                    "encoder.mid_block.attentions.0.to_out.0.bias", "decoder.up_blocks.0.upsamplers.0.conv.bias",
                    "decoder.up_blocks.1.resnets.2.norm2.weight", "decoder.conv_norm_out.weight", "quant_conv.weight",
                    "post_quant_conv.bias"] {
            XCTAssertTrue(names.contains(key), key)
        }
    }

    func testLegacyAttentionKeysLoad() throws {
        let f = try Fixtures.open("vae")
        let renames = ["to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"]
        var legacy: [String: String] = [:]  // legacy key -> fixture key
        for name in f.names where name.hasPrefix("weights.") {
            var key = String(name.dropFirst("weights.".count))
            for (new, old) in renames where key.contains(".attentions.0.\(new).") {
                key = key.replacingOccurrences(of: ".attentions.0.\(new).", with: ".attentions.0.\(old).")
            }
            legacy[key] = name
        }
        XCTAssertTrue(legacy.keys.contains("decoder.mid_block.attentions.0.proj_attn.weight"))
        let m = AutoencoderKL(config: Self.fixtureConfig, init: .uninitialized())
        let report = try m.load(keys: Set(legacy.keys)) { try f.tensor(legacy[$0]!) }
        XCTAssertTrue(report.isExact, report.description)
        let out = noGrad { m.decode(try! f.tensor("latents")) }
        assertClose(out, try f.tensor("decoded"), atol: 1e-4, rtol: 1e-4, "decoded after legacy load")
    }

    func testParameterCounts() {
        // Counted with diffusers 0.42.1 (AutoencoderKL(**config) on the meta device) by
        // tools/reference/fixtures_vae.py.
        XCTAssertEqual(AutoencoderKL(config: .sdxl, init: .uninitialized()).parameterCount, 83_653_863)
        var bare = Self.fixtureConfig
        bare.midBlockAddAttention = false; bare.useQuantConv = false; bare.usePostQuantConv = false
        XCTAssertEqual(AutoencoderKL(config: bare, init: .uninitialized()).parameterCount, 53_187)
    }

    func testTinyPresetKeepsTheSDXLDownscale() {
        let m = AutoencoderKL(config: .tiny, init: ParameterInitializer(seed: 2))
        XCTAssertEqual(m.downscaleFactor, 8)
        let out = noGrad { m.decode(Tensor.randn([1, 4, 4, 4], seed: 1)) }
        XCTAssertEqual(out.shape, [1, 3, 32, 32])
        let posterior = noGrad { m.encode(Tensor.randn([1, 3, 32, 32], seed: 2)) }
        XCTAssertEqual(posterior.mean.shape, [1, 4, 4, 4])
    }

    func testSDXLConfigFileDecodes() throws {
        let json = #"""
        {"_class_name": "AutoencoderKL", "_diffusers_version": "0.18.0.dev0", "act_fn": "silu",
         "block_out_channels": [128, 256, 512, 512],
         "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
         "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
         "sample_size": 512, "scaling_factor": 0.13025,
         "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
         "force_upcast": false}
        """#
        let c = try JSONDecoder().decode(AutoencoderKLConfig.self, from: Data(json.utf8))
        XCTAssertEqual(c, .sdxl)
        XCTAssertTrue(c.midBlockAddAttention && c.useQuantConv && c.usePostQuantConv)
        XCTAssertNil(c.shiftFactor)
        // What we write reads back the same.
        XCTAssertEqual(try JSONDecoder().decode(AutoencoderKLConfig.self, from: JSONEncoder().encode(c)), c)
    }

    func testUnsupportedConfigValuesNameTheKey() {
        let cases: [(String, String)] = [
            (#"{"act_fn": "relu"}"#, "act_fn"),
            (#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#, "down_block_types"),
            (#"{"up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#, "up_block_types"),
            (#"{"block_out_channels": [64, 100], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#, "norm_num_groups"),
            (#"{"layers_per_block": 0}"#, "layers_per_block"),
            (#"{"scaling_factor": "big"}"#, "scaling_factor"),
        ]
        for (json, key) in cases {
            XCTAssertThrowsError(try JSONDecoder().decode(AutoencoderKLConfig.self, from: Data(json.utf8)), key) {
                XCTAssertTrue("\($0)".contains("'\(key)'"), "\($0)")
            }
        }
    }
}
