import XCTest
import KoalaTensor
import KoalaTestSupport
@testable import KoalaModels

final class CLIPTextModelTests: XCTestCase {
    private func model(_ name: String, projection: Bool, eos: Int, act: String) throws -> (CLIPTextModel, SafeTensorsFile) {
        let f = try Fixtures.open("clip")
        var c = CLIPTextConfig()
        c.vocabSize = 300; c.hiddenSize = 32; c.intermediateSize = 64; c.numHiddenLayers = 3
        c.numAttentionHeads = 4; c.maxPositionEmbeddings = 16; c.hiddenAct = act; c.eosTokenId = eos
        c.projectionDim = 24
        let m = CLIPTextModel(config: c, withProjection: projection, init: .uninitialized())
        let prefix = "\(name).weights."
        let keys = Set(f.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
        let report = try m.load(keys: keys) { try f.tensor(prefix + $0) }
        XCTAssertTrue(report.isExact, report.description)
        return (m, f)
    }

    private func ids(_ f: SafeTensorsFile, _ name: String) throws -> [[Int]] {
        let t = try f.tensor("\(name).ids")
        return (0..<t.shape[0]).map { i in (0..<t.shape[1]).map { Int(t[i, $0]) } }
    }

    func testCLIPTextModelMatchesTransformers() throws {
        let (m, f) = try model("l", projection: false, eos: 2, act: "quick_gelu")
        let out = noGrad { m(try! ids(f, "l")) }
        XCTAssertEqual(out.hiddenStates.count, 4)
        for (i, h) in out.hiddenStates.enumerated() {
            assertClose(h, try f.tensor("l.hidden_states.\(i)"), atol: 1e-5, rtol: 1e-4, "hidden state \(i)")
        }
        assertClose(out.lastHiddenState, try f.tensor("l.last_hidden_state"), atol: 1e-5, rtol: 1e-4, "last hidden state")
        assertClose(out.pooled, try f.tensor("l.pooled"), atol: 1e-5, rtol: 1e-4, "pooled")
    }

    func testCLIPTextModelWithProjectionMatchesTransformers() throws {
        let (m, f) = try model("g", projection: true, eos: 299, act: "gelu")
        let out = noGrad { m(try! ids(f, "g")) }
        for (i, h) in out.hiddenStates.enumerated() {
            assertClose(h, try f.tensor("g.hidden_states.\(i)"), atol: 1e-5, rtol: 1e-4, "hidden state \(i)")
        }
        assertClose(out.textEmbeds!, try f.tensor("g.text_embeds"), atol: 1e-5, rtol: 1e-4, "text embeds")
    }

    func testParameterNamesAreTransformersKeys() {
        var c = CLIPTextConfig()
        c.numHiddenLayers = 1; c.hiddenSize = 8; c.numAttentionHeads = 2; c.intermediateSize = 16; c.vocabSize = 10
        let names = CLIPTextModel(config: c, withProjection: true, init: ParameterInitializer(seed: 1)).namedParameters().map(\.0)
        XCTAssertTrue(names.contains("text_model.embeddings.token_embedding.weight"))
        XCTAssertTrue(names.contains("text_model.encoder.layers.0.self_attn.out_proj.bias"))
        XCTAssertTrue(names.contains("text_model.final_layer_norm.weight"))
        XCTAssertTrue(names.contains("text_projection.weight"))
    }

    func testUnsupportedActivationIsAnErrorNamingTheKey() {
        let json = #"{"hidden_act": "relu", "hidden_size": 8, "num_attention_heads": 2}"#
        XCTAssertThrowsError(try JSONDecoder().decode(CLIPTextConfig.self, from: Data(json.utf8))) {
            XCTAssertTrue("\($0)".contains("hidden_act"), "\($0)")
        }
    }
}
