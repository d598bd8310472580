import Foundation
import KoalaModels
import XCTest

/// The one spelling of LoRA keys and metadata that both the generation loader and the
/// training exporter use: what is written splits back to the same module and role, in
/// every style the loader reads.
final class LoRAKeyCodecTests: XCTestCase {
    let attention = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    let encoder = "text_model.encoder.layers.0.self_attn.q_proj"

    func testWrittenKeysSplitBackToTheirModule() throws {
        let modules = LoRAKeyCodec.Modules(parameterNames: [attention + ".weight", attention + ".bias", "conv_in.weight"])
        for format in LoRAFileFormat.allCases {
            let codec = LoRAKeyCodec(format)
            for role in [LoRATensorRole.down, .up, .alpha] {
                let key = codec.key(component: "unet", module: attention, role: role)
                let split = try XCTUnwrap(codec.split(key), key)
                XCTAssertEqual(split.component, "unet", key)
                XCTAssertEqual(split.role, role, key)
                XCTAssertEqual(codec.modulePath(split.module, in: modules), attention, key)
                XCTAssertEqual(LoRAFileFormat(keys: [key]), format, key)
            }
        }
        XCTAssertEqual(LoRAKeyCodec(.diffusers).key(component: "unet", module: attention, role: .down), "unet.\(attention).lora_A.weight")
        XCTAssertEqual(LoRAKeyCodec(.kohya).key(component: "text_encoder_2", module: encoder, role: .up),
                       "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight")
        XCTAssertEqual(LoRAKeyCodec(.kohya).base(component: "text_encoder", module: encoder), "lora_te1_text_model_encoder_layers_0_self_attn_q_proj")
    }

    func testOlderSpellingsNameTheSameModule() throws {
        let codec = LoRAKeyCodec(.diffusers)
        for (key, role) in [("unet.\(attention).lora.down.weight", LoRATensorRole.down),
                            ("unet.\(attention).lora_linear_layer.up.weight", LoRATensorRole.up)] {
            let split = try XCTUnwrap(codec.split(key), key)
            XCTAssertEqual(split.module, attention, key)
            XCTAssertEqual(split.role, role, key)
        }
        XCTAssertNil(codec.split("unet.\(attention).lora_magnitude_vector"))
        // SD 1.x's single text encoder, and transformers 5 paths without `text_model.`.
        let kohya = LoRAKeyCodec(.kohya)
        let te = LoRAKeyCodec.Modules(parameterNames: [encoder + ".weight"])
        let sd1 = try XCTUnwrap(kohya.split("lora_te_encoder_layers_0_self_attn_q_proj.alpha"))
        XCTAssertEqual(sd1.component, "text_encoder")
        XCTAssertEqual(kohya.modulePath(sd1.module, in: te), encoder)
        XCTAssertEqual(codec.modulePath("encoder.layers.0.self_attn.q_proj", in: te), encoder)
        XCTAssertNil(codec.modulePath("encoder.layers.1.self_attn.q_proj", in: te))
    }

    func testSGMLayoutIsRecognisedOnlyForKohyaUNets() throws {
        let kohya = LoRAKeyCodec(.kohya)
        let split = try XCTUnwrap(kohya.split("lora_unet_input_blocks_4_1_proj_in.lora_down.weight"))
        XCTAssertTrue(kohya.isSGMLayout(component: split.component, module: split.module))
        XCTAssertFalse(kohya.isSGMLayout(component: "unet", module: "down_blocks_1_attentions_0_proj_in"))
        XCTAssertFalse(LoRAKeyCodec(.diffusers).isSGMLayout(component: "unet", module: "input_blocks_4_1_proj_in"))
    }

    func testAdapterMetadataReadsBackWhatItWrites() throws {
        let unet = LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targetModules: ["to_v", "to_q"])
        let te = LoRAConfig(rank: 2, alpha: 2, targetModules: LoRAConfig.textEncoderTargets)
        let json = LoRAAdapterMetadata([("unet", unet), ("text_encoder_2", te)]).json
        let read = try XCTUnwrap(try LoRAAdapterMetadata.read([LoRAAdapterMetadata.key: json]))
        let configs = try read.configs(source: "x")
        XCTAssertEqual(configs["unet"], LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targetModules: ["to_q", "to_v"]))
        XCTAssertEqual(configs["text_encoder_2"]?.rank, 2)
        XCTAssertEqual(read.alpha(component: "unet", module: attention), 8)
        XCTAssertFalse(read.usesRSLoRA(component: "unet"))
        XCTAssertNil(try LoRAAdapterMetadata.read([:]))
        XCTAssertThrowsError(try LoRAAdapterMetadata.read([LoRAAdapterMetadata.key: "{"]))
    }

    func testAlphaPatternLongestMatchWins() throws {
        let json = #"{"unet.lora_alpha": 4, "unet.alpha_pattern": {"to_q": 16, "attn1.to_q": 32}, "unet.use_rslora": true}"#
        let read = try XCTUnwrap(try LoRAAdapterMetadata.read([LoRAAdapterMetadata.key: json]))
        XCTAssertEqual(read.alpha(component: "unet", module: attention), 32)
        XCTAssertEqual(read.alpha(component: "unet", module: "mid_block.attentions.0.transformer_blocks.0.attn2.to_q"), 16)
        XCTAssertEqual(read.alpha(component: "unet", module: "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"), 4)
        XCTAssertNil(read.alpha(component: "text_encoder", module: encoder))
        XCTAssertTrue(read.usesRSLoRA(component: "unet"))
        XCTAssertThrowsError(try read.configs(source: "file.safetensors")) { XCTAssertTrue("\($0)".contains("lacks r"), "\($0)") }
    }
}
