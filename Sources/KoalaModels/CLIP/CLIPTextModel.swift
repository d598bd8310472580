import Foundation
import KoalaTensor

/// transformers' `CLIPTextConfig` (the keys of `text_encoder/config.json`).
public struct CLIPTextConfig: Codable, Sendable {
    public var vocabSize = 49408
    public var hiddenSize = 768
    public var intermediateSize = 3072
    public var numHiddenLayers = 12
    public var numAttentionHeads = 12
    public var maxPositionEmbeddings = 77
    public var hiddenAct = "quick_gelu"
    public var layerNormEps: Float = 1e-5
    public var projectionDim = 768
    public var bosTokenId = 49406
    public var eosTokenId = 49407
    public var padTokenId = 1

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case maxPositionEmbeddings = "max_position_embeddings", hiddenAct = "hidden_act"
        case layerNormEps = "layer_norm_eps", projectionDim = "projection_dim"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
    }

    public init() {}

    /// SDXL's `text_encoder` (CLIP ViT-L/14; its config keeps the legacy eos id 2).
    public static var sdxlTextEncoder: CLIPTextConfig {
        var c = CLIPTextConfig()
        c.bosTokenId = 0; c.eosTokenId = 2
        return c
    }

    /// SDXL's `text_encoder_2` (OpenCLIP ViT-bigG/14 with projection).
    public static var sdxlTextEncoder2: CLIPTextConfig {
        var c = sdxlTextEncoder
        c.hiddenSize = 1280; c.intermediateSize = 5120; c.numHiddenLayers = 32
        c.numAttentionHeads = 20; c.projectionDim = 1280; c.hiddenAct = "gelu"
        return c
    }

    /// A toy text encoder with the real vocabulary (so real tokenizers work), for the
    /// tiny test pipeline: 32 wide, 2 layers.
    public static func tiny(hiddenAct: String) -> CLIPTextConfig {
        var c = sdxlTextEncoder
        c.hiddenSize = 32; c.intermediateSize = 64; c.numHiddenLayers = 2
        c.numAttentionHeads = 4; c.projectionDim = 32; c.hiddenAct = hiddenAct
        return c
    }

    /// The config.json transformers writes for `CLIPTextModel` / `CLIPTextModelWithProjection`.
    public func transformersJSON(withProjection: Bool) throws -> Data {
        var dict = try JSONSerialization.jsonObject(with: JSONEncoder().encode(self)) as! [String: Any]
        dict["architectures"] = [withProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel"]
        dict["model_type"] = "clip_text_model"
        dict["layer_norm_eps"] = Double("\(layerNormEps)")!
        dict["torch_dtype"] = "float32"
        return try JSONSerialization.data(withJSONObject: dict, options: [.prettyPrinted, .sortedKeys])
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = CLIPTextConfig()
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? d.vocabSize
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? d.intermediateSize
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? d.numAttentionHeads
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? d.maxPositionEmbeddings
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? d.hiddenAct
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? d.layerNormEps
        projectionDim = try c.decodeIfPresent(Int.self, forKey: .projectionDim) ?? d.projectionDim
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId) ?? d.bosTokenId
        eosTokenId = try c.decodeIfPresent(Int.self, forKey: .eosTokenId) ?? d.eosTokenId
        padTokenId = try c.decodeIfPresent(Int.self, forKey: .padTokenId) ?? d.padTokenId
        guard ["quick_gelu", "gelu"].contains(hiddenAct) else {
            throw ModelConfigError(key: "hidden_act", value: "\"\(hiddenAct)\"", supported: "quick_gelu, gelu")
        }
        for (key, value) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                             ("num_attention_heads", numAttentionHeads), ("max_position_embeddings", maxPositionEmbeddings),
                             ("projection_dim", projectionDim)] where value < 1 {
            throw ModelConfigError(key: key, value: "\(value)", supported: "a positive integer")
        }
        guard numHiddenLayers >= 0 else { throw ModelConfigError(key: "num_hidden_layers", value: "\(numHiddenLayers)", supported: "0 or more") }
        for (key, id) in [("bos_token_id", bosTokenId), ("eos_token_id", eosTokenId), ("pad_token_id", padTokenId)] where !(0..<vocabSize).contains(id) {
            throw ModelConfigError(key: key, value: "\(id)", supported: "an id inside vocab_size \(vocabSize)")
        }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw ModelConfigError(key: "num_attention_heads", value: "\(numAttentionHeads)", supported: "a divisor of hidden_size \(hiddenSize)")
        }
    }
}

public final class CLIPAttention: Module {
    public let qProj, kProj, vProj, outProj: Linear
    let heads: Int

    init(_ c: CLIPTextConfig, _ p: ParameterInitializer) {
        let d = c.hiddenSize
        qProj = Linear(d, d, init: p); kProj = Linear(d, d, init: p)
        vProj = Linear(d, d, init: p); outProj = Linear(d, d, init: p)
        heads = c.numAttentionHeads
    }

    public var entries: [(String, ModuleEntry)] {
        [("q_proj", .module(qProj)), ("k_proj", .module(kProj)), ("v_proj", .module(vProj)), ("out_proj", .module(outProj))]
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, l, d) = (x.shape[0], x.shape[1], x.shape[2])
        func split(_ t: Tensor) -> Tensor { t.reshape([b, l, heads, d / heads]).permute([0, 2, 1, 3]) }
        let o = Tensor.scaledDotProductAttention(query: split(qProj(x)), key: split(kProj(x)), value: split(vProj(x)), causal: true)
        return outProj(o.permute([0, 2, 1, 3]).reshape([b, l, d]))
    }
}

public final class CLIPMLP: Module {
    public let fc1, fc2: Linear
    let quick: Bool

    init(_ c: CLIPTextConfig, _ p: ParameterInitializer) {
        fc1 = Linear(c.hiddenSize, c.intermediateSize, init: p)
        fc2 = Linear(c.intermediateSize, c.hiddenSize, init: p)
        quick = c.hiddenAct == "quick_gelu"
    }

    public var entries: [(String, ModuleEntry)] { [("fc1", .module(fc1)), ("fc2", .module(fc2))] }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let h = fc1(x)
        return fc2(quick ? h.quickGELU() : h.gelu())
    }
}

public final class CLIPEncoderLayer: Module {
    public let selfAttn: CLIPAttention
    public let layerNorm1, layerNorm2: LayerNorm
    public let mlp: CLIPMLP

    init(_ c: CLIPTextConfig, _ p: ParameterInitializer) {
        selfAttn = CLIPAttention(c, p)
        layerNorm1 = LayerNorm(c.hiddenSize, eps: c.layerNormEps, init: p)
        mlp = CLIPMLP(c, p)
        layerNorm2 = LayerNorm(c.hiddenSize, eps: c.layerNormEps, init: p)
    }

    public var entries: [(String, ModuleEntry)] {
        [("self_attn", .module(selfAttn)), ("layer_norm1", .module(layerNorm1)), ("mlp", .module(mlp)), ("layer_norm2", .module(layerNorm2))]
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let h = x + selfAttn(layerNorm1(x))
        return h + mlp(layerNorm2(h))
    }
}

/// Named groups so parameter paths read `embeddings.token_embedding.weight`, `encoder.layers.3…`.
final class NamedModules: Module {
    let entries: [(String, ModuleEntry)]
    init(_ entries: [(String, ModuleEntry)]) { self.entries = entries }
}

/// The outputs the SDXL pipeline uses from a CLIP text encoder.
public struct CLIPTextOutput {
    /// After the final layer norm, [B, L, D].
    public let lastHiddenState: Tensor
    /// The embeddings output and every layer's output (no final norm), as transformers'
    /// `hidden_states`: SDXL takes `hiddenStates[hiddenStates.count - 2]`.
    public let hiddenStates: [Tensor]
    /// `lastHiddenState` at each sequence's end-of-text token, [B, D].
    public let pooled: Tensor
    /// `pooled · text_projectionᵀ` for `CLIPTextModelWithProjection`, else nil.
    public let textEmbeds: Tensor?
}

/// transformers' `CLIPTextModel` (SDXL `text_encoder`, ViT-L/14) and, with
/// `withProjection`, `CLIPTextModelWithProjection` (`text_encoder_2`, ViT-bigG/14).
public final class CLIPTextModel: Module {
    public let config: CLIPTextConfig
    public let tokenEmbedding, positionEmbedding: Embedding
    public let layers: [CLIPEncoderLayer]
    public let finalLayerNorm: LayerNorm
    public let textProjection: Linear?

    public init(config c: CLIPTextConfig, withProjection: Bool, init p: ParameterInitializer) {
        config = c
        tokenEmbedding = Embedding(c.vocabSize, c.hiddenSize, std: 0.02, init: p)
        positionEmbedding = Embedding(c.maxPositionEmbeddings, c.hiddenSize, std: 0.01, init: p)
        layers = (0..<c.numHiddenLayers).map { _ in CLIPEncoderLayer(c, p) }
        finalLayerNorm = LayerNorm(c.hiddenSize, eps: c.layerNormEps, init: p)
        textProjection = withProjection ? Linear(c.hiddenSize, c.projectionDim, bias: false, init: p) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        let textModel = NamedModules([
            ("embeddings", .module(NamedModules([("token_embedding", .module(tokenEmbedding)), ("position_embedding", .module(positionEmbedding))]))),
            ("encoder", .module(NamedModules([("layers", .list(layers))]))),
            ("final_layer_norm", .module(finalLayerNorm)),
        ])
        return [("text_model", .module(textModel))] + (textProjection.map { [("text_projection", .module($0))] } ?? [])
    }

    /// Loads weights saved either as real SDXL checkpoints do (`text_model.…` keys) or as
    /// transformers 5 saves a plain `CLIPTextModel` (without the `text_model.` prefix).
    @discardableResult
    public func load(keys: Set<String>, _ lookup: (String) throws -> Tensor) throws -> LoadReport {
        let prefixed = keys.contains { $0.hasPrefix("text_model.") }
        if prefixed { return try loadExactKeys(keys, lookup) }
        let mapped = Set(keys.map { $0 == "text_projection.weight" ? $0 : "text_model." + $0 })
        return try loadExactKeys(mapped) { key in
            try lookup(key.hasPrefix("text_model.") ? String(key.dropFirst("text_model.".count)) : key)
        }
    }

    /// Encodes token ids laid out [batch, length].
    public func callAsFunction(_ ids: [[Int]]) -> CLIPTextOutput {
        let b = ids.count, l = ids[0].count
        precondition(ids.allSatisfy { $0.count == l }, "CLIPTextModel: all sequences need the same length")
        precondition(l <= config.maxPositionEmbeddings, "CLIPTextModel: \(l) tokens exceed \(config.maxPositionEmbeddings) positions")
        var h = tokenEmbedding(ids.flatMap { $0 }, shape: [b, l]) + positionEmbedding(Array(0..<l), shape: [1, l])
        var hidden = [h]
        for layer in layers {
            h = layer(h)
            hidden.append(h)
        }
        let last = finalLayerNorm(h)
        // transformers picks the end-of-text position as the argmax id for old configs
        // (eos_token_id 2) and the first eos id otherwise: both are the first 49407.
        let eosRows = ids.enumerated().map { i, seq -> Int in
            let pos = config.eosTokenId == 2 ? seq.firstIndex(of: seq.max()!)! : (seq.firstIndex(of: config.eosTokenId) ?? 0)
            return i * l + pos
        }
        let pooled = Tensor.embedding(eosRows, weight: last.reshape([b * l, config.hiddenSize]))
        return CLIPTextOutput(lastHiddenState: last, hiddenStates: hidden, pooled: pooled,
                              textEmbeds: textProjection.map { $0(pooled) })
    }
}
