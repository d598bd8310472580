import Foundation

/// A config value diffusers accepts either once for every block (`8`) or per block
/// (`[5, 10, 20]`).
public enum OneOrMany<Value: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
    case one(Value)
    case many([Value])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        // The list form first: a nested OneOrMany would otherwise read `[1, 2]` as one value.
        if let list = try? c.decode([Value].self) { self = .many(list) } else { self = .one(try c.decode(Value.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .one(let v): try c.encode(v)
        case .many(let vs): try c.encode(vs)
        }
    }

    /// One value per block, or nil when a list has the wrong length.
    public func perBlock(_ count: Int) -> [Value]? {
        switch self {
        case .one(let v): return Array(repeating: v, count: count)
        case .many(let vs): return vs.count == count ? vs : nil
        }
    }
}

/// diffusers' `UNet2DConditionModel` config (the keys of `unet/config.json`), limited to
/// what the SDXL family uses. Decoding rejects any value KoalaBooth does not implement
/// with a `ModelConfigError` naming the key; encoding writes every key diffusers 0.42
/// writes, so `UNet2DConditionModel.from_config` reads the result.
public struct UNet2DConditionConfig: Codable, Sendable, Equatable {
    public var sampleSize: OneOrMany<Int>? = nil
    public var inChannels = 4
    public var outChannels = 4
    public var centerInputSample = false
    public var flipSinToCos = true
    public var freqShift: Float = 0
    /// `DownBlock2D` or `CrossAttnDownBlock2D` each.
    public var downBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    /// `UNetMidBlock2DCrossAttn`, or nil for no mid block (KOALA-700M).
    public var midBlockType: String? = "UNetMidBlock2DCrossAttn"
    /// `UpBlock2D` or `CrossAttnUpBlock2D` each.
    public var upBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    public var blockOutChannels = [320, 640, 1280, 1280]
    /// Resnets per down block; up blocks have one more.
    public var layersPerBlock: OneOrMany<Int> = .one(2)
    public var midBlockScaleFactor: Float = 1
    public var normNumGroups = 32
    public var normEps: Float = 1e-5
    public var crossAttentionDim: OneOrMany<Int> = .one(1280)
    /// Transformer blocks per attention: one count, one per block, or (with
    /// `reverseTransformerLayersPerBlock`) one per resnet of each down block.
    public var transformerLayersPerBlock: OneOrMany<OneOrMany<Int>> = .one(.one(1))
    /// Per up block (count or per-layer list); defaults to the down blocks' reversed.
    public var reverseTransformerLayersPerBlock: [OneOrMany<Int>]? = nil
    /// The number of attention heads per block (diffusers' historical misnomer: with
    /// `num_attention_heads` null, which is the only value diffusers accepts, heads =
    /// `attention_head_dim`).
    public var attentionHeadDim: OneOrMany<Int> = .one(8)
    public var useLinearProjection = false
    /// `text_time` (SDXL micro-conditioning) or nil.
    public var additionEmbedType: String? = nil
    public var additionTimeEmbedDim: Int? = nil
    public var projectionClassEmbeddingsInputDim: Int? = nil
    /// Only changes fp16 attention; float32 results are the same either way.
    public var upcastAttention = false
    /// Width of the time embedding; nil means `4 · block_out_channels[0]`.
    public var timeEmbeddingDim: Int? = nil
    public var convInKernel = 3
    public var convOutKernel = 3
    /// Read and written back; diffusers passes it to no block type supported here, so
    /// it has no effect.
    public var resnetOutScaleFactor: Float = 1
    /// Read and written back; only the `text` addition embedding uses it.
    public var additionEmbedTypeNumHeads = 64

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case sampleSize = "sample_size", inChannels = "in_channels", outChannels = "out_channels"
        case centerInputSample = "center_input_sample", flipSinToCos = "flip_sin_to_cos", freqShift = "freq_shift"
        case downBlockTypes = "down_block_types", midBlockType = "mid_block_type", upBlockTypes = "up_block_types"
        case onlyCrossAttention = "only_cross_attention", blockOutChannels = "block_out_channels"
        case layersPerBlock = "layers_per_block", downsamplePadding = "downsample_padding"
        case midBlockScaleFactor = "mid_block_scale_factor", dropout, actFn = "act_fn"
        case normNumGroups = "norm_num_groups", normEps = "norm_eps", crossAttentionDim = "cross_attention_dim"
        case transformerLayersPerBlock = "transformer_layers_per_block"
        case reverseTransformerLayersPerBlock = "reverse_transformer_layers_per_block"
        case encoderHidDim = "encoder_hid_dim", encoderHidDimType = "encoder_hid_dim_type"
        case attentionHeadDim = "attention_head_dim", numAttentionHeads = "num_attention_heads"
        case dualCrossAttention = "dual_cross_attention", useLinearProjection = "use_linear_projection"
        case classEmbedType = "class_embed_type", additionEmbedType = "addition_embed_type"
        case additionTimeEmbedDim = "addition_time_embed_dim", numClassEmbeds = "num_class_embeds"
        case upcastAttention = "upcast_attention", resnetTimeScaleShift = "resnet_time_scale_shift"
        case resnetSkipTimeAct = "resnet_skip_time_act", resnetOutScaleFactor = "resnet_out_scale_factor"
        case timeEmbeddingType = "time_embedding_type", timeEmbeddingDim = "time_embedding_dim"
        case timeEmbeddingActFn = "time_embedding_act_fn", timestepPostAct = "timestep_post_act"
        case timeCondProjDim = "time_cond_proj_dim", convInKernel = "conv_in_kernel", convOutKernel = "conv_out_kernel"
        case projectionClassEmbeddingsInputDim = "projection_class_embeddings_input_dim"
        case attentionType = "attention_type", classEmbeddingsConcat = "class_embeddings_concat"
        case midBlockOnlyCrossAttention = "mid_block_only_cross_attention"
        case crossAttentionNorm = "cross_attention_norm", additionEmbedTypeNumHeads = "addition_embed_type_num_heads"
    }

    /// Keys whose only supported value is diffusers' default (JSON text of the accepted
    /// values, then the default written back by `encode`).
    private static let fixedKeys: [(CodingKeys, accepted: Set<String>, written: String)] = [
        (.onlyCrossAttention, ["false"], "false"),
        (.downsamplePadding, ["1"], "1"),
        (.dropout, ["0", "0.0"], "0.0"),
        (.actFn, ["\"silu\"", "\"swish\""], "\"silu\""),
        (.encoderHidDim, ["null"], "null"),
        (.encoderHidDimType, ["null"], "null"),
        (.numAttentionHeads, ["null"], "null"),
        (.dualCrossAttention, ["false", "null"], "false"),
        (.classEmbedType, ["null"], "null"),
        (.numClassEmbeds, ["null"], "null"),
        (.resnetTimeScaleShift, ["\"default\""], "\"default\""),
        (.resnetSkipTimeAct, ["false"], "false"),
        (.timeEmbeddingType, ["\"positional\""], "\"positional\""),
        (.timeEmbeddingActFn, ["null"], "null"),
        (.timestepPostAct, ["null"], "null"),
        (.timeCondProjDim, ["null"], "null"),
        (.attentionType, ["\"default\""], "\"default\""),
        (.classEmbeddingsConcat, ["false"], "false"),
        (.midBlockOnlyCrossAttention, ["null", "false"], "null"),
        (.crossAttentionNorm, ["null"], "null"),
    ]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = UNet2DConditionConfig()
        func value<T: Decodable>(_ key: CodingKeys, _ fallback: T) throws -> T {
            guard c.contains(key), !(try c.decodeNil(forKey: key)) else { return fallback }
            do { return try c.decode(T.self, forKey: key) } catch {
                let raw = (try? c.decode(RawJSON.self, forKey: key).text) ?? "?"
                throw ModelConfigError(key: key.rawValue, value: raw, supported: "a value of type \(T.self)")
            }
        }
        // Keys where null is meaningful (no mid block, no addition embedding, …).
        func optional<T: Decodable>(_ key: CodingKeys, _ fallback: T?) throws -> T? {
            guard c.contains(key) else { return fallback }
            if try c.decodeNil(forKey: key) { return nil }
            return try value(key, fallback)
        }
        sampleSize = try optional(.sampleSize, d.sampleSize)
        inChannels = try value(.inChannels, d.inChannels)
        outChannels = try value(.outChannels, d.outChannels)
        centerInputSample = try value(.centerInputSample, d.centerInputSample)
        flipSinToCos = try value(.flipSinToCos, d.flipSinToCos)
        freqShift = try value(.freqShift, d.freqShift)
        downBlockTypes = try value(.downBlockTypes, d.downBlockTypes)
        midBlockType = try optional(.midBlockType, d.midBlockType)
        upBlockTypes = try value(.upBlockTypes, d.upBlockTypes)
        blockOutChannels = try value(.blockOutChannels, d.blockOutChannels)
        layersPerBlock = try value(.layersPerBlock, d.layersPerBlock)
        midBlockScaleFactor = try value(.midBlockScaleFactor, d.midBlockScaleFactor)
        if c.contains(.normNumGroups), try c.decodeNil(forKey: .normNumGroups) {
            throw ModelConfigError(key: "norm_num_groups", value: "null", supported: "a group count")
        }
        normNumGroups = try value(.normNumGroups, d.normNumGroups)
        normEps = try value(.normEps, d.normEps)
        crossAttentionDim = try value(.crossAttentionDim, d.crossAttentionDim)
        transformerLayersPerBlock = try value(.transformerLayersPerBlock, d.transformerLayersPerBlock)
        reverseTransformerLayersPerBlock = try optional(.reverseTransformerLayersPerBlock, d.reverseTransformerLayersPerBlock)
        attentionHeadDim = try value(.attentionHeadDim, d.attentionHeadDim)
        useLinearProjection = try value(.useLinearProjection, d.useLinearProjection)
        additionEmbedType = try optional(.additionEmbedType, d.additionEmbedType)
        additionTimeEmbedDim = try optional(.additionTimeEmbedDim, d.additionTimeEmbedDim)
        projectionClassEmbeddingsInputDim = try optional(.projectionClassEmbeddingsInputDim, d.projectionClassEmbeddingsInputDim)
        upcastAttention = try value(.upcastAttention, d.upcastAttention)
        timeEmbeddingDim = try optional(.timeEmbeddingDim, d.timeEmbeddingDim)
        convInKernel = try value(.convInKernel, d.convInKernel)
        convOutKernel = try value(.convOutKernel, d.convOutKernel)
        resnetOutScaleFactor = try value(.resnetOutScaleFactor, d.resnetOutScaleFactor)
        additionEmbedTypeNumHeads = try value(.additionEmbedTypeNumHeads, d.additionEmbedTypeNumHeads)

        for (key, accepted, written) in Self.fixedKeys where c.contains(key) {
            let raw = try c.decode(RawJSON.self, forKey: key)
            // `only_cross_attention` may also be a per-block list of false.
            if key == .onlyCrossAttention, raw.text.hasPrefix("["), !raw.text.contains("true") { continue }
            if key == .dropout, Double(raw.text) == 0 { continue }
            guard accepted.contains(raw.text) else {
                throw ModelConfigError(key: key.rawValue, value: raw.text, supported: "only \(written)")
            }
        }
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sampleSize, forKey: .sampleSize)
        try c.encode(inChannels, forKey: .inChannels)
        try c.encode(outChannels, forKey: .outChannels)
        try c.encode(centerInputSample, forKey: .centerInputSample)
        try c.encode(flipSinToCos, forKey: .flipSinToCos)
        if freqShift == freqShift.rounded() { try c.encode(Int(freqShift), forKey: .freqShift) } else { try c.encode(freqShift, forKey: .freqShift) }
        try c.encode(downBlockTypes, forKey: .downBlockTypes)
        try c.encode(midBlockType, forKey: .midBlockType)
        try c.encode(upBlockTypes, forKey: .upBlockTypes)
        try c.encode(blockOutChannels, forKey: .blockOutChannels)
        try c.encode(layersPerBlock, forKey: .layersPerBlock)
        try c.encode(midBlockScaleFactor, forKey: .midBlockScaleFactor)
        try c.encode(normNumGroups, forKey: .normNumGroups)
        try c.encode(Double("\(normEps)")!, forKey: .normEps)  // 1e-05, not float32's widened 1.0000000e-05…
        try c.encode(crossAttentionDim, forKey: .crossAttentionDim)
        try c.encode(transformerLayersPerBlock, forKey: .transformerLayersPerBlock)
        try c.encode(reverseTransformerLayersPerBlock, forKey: .reverseTransformerLayersPerBlock)
        try c.encode(attentionHeadDim, forKey: .attentionHeadDim)
        try c.encode(useLinearProjection, forKey: .useLinearProjection)
        try c.encode(additionEmbedType, forKey: .additionEmbedType)
        try c.encode(additionTimeEmbedDim, forKey: .additionTimeEmbedDim)
        try c.encode(projectionClassEmbeddingsInputDim, forKey: .projectionClassEmbeddingsInputDim)
        try c.encode(upcastAttention, forKey: .upcastAttention)
        try c.encode(timeEmbeddingDim, forKey: .timeEmbeddingDim)
        try c.encode(convInKernel, forKey: .convInKernel)
        try c.encode(convOutKernel, forKey: .convOutKernel)
        try c.encode(resnetOutScaleFactor, forKey: .resnetOutScaleFactor)
        try c.encode(additionEmbedTypeNumHeads, forKey: .additionEmbedTypeNumHeads)
        for (key, _, written) in Self.fixedKeys {
            try c.encode(try JSONDecoder().decode(RawJSON.self, from: Data(written.utf8)), forKey: key)
        }
        var meta = encoder.container(keyedBy: MetadataKey.self)
        try meta.encode("UNet2DConditionModel", forKey: .className)
        try meta.encode("0.42.1", forKey: .diffusersVersion)
    }

    /// diffusers' bookkeeping keys in config.json (ignored when decoding).
    private enum MetadataKey: String, CodingKey {
        case className = "_class_name", diffusersVersion = "_diffusers_version"
    }

    /// Checks the structure (list lengths, supported block types, channel divisibility),
    /// throwing a `ModelConfigError` naming the offending key.
    public func validate() throws {
        let n = downBlockTypes.count
        func fail(_ key: CodingKeys, _ value: String, _ supported: String) -> ModelConfigError {
            ModelConfigError(key: key.rawValue, value: value, supported: supported)
        }
        for t in downBlockTypes where !["DownBlock2D", "CrossAttnDownBlock2D"].contains(t) {
            throw fail(.downBlockTypes, "\"\(t)\"", "DownBlock2D, CrossAttnDownBlock2D")
        }
        for t in upBlockTypes where !["UpBlock2D", "CrossAttnUpBlock2D"].contains(t) {
            throw fail(.upBlockTypes, "\"\(t)\"", "UpBlock2D, CrossAttnUpBlock2D")
        }
        if let m = midBlockType, m != "UNetMidBlock2DCrossAttn" {
            throw fail(.midBlockType, "\"\(m)\"", "UNetMidBlock2DCrossAttn, null")
        }
        guard n > 0 else { throw fail(.downBlockTypes, "[]", "at least one block") }
        guard upBlockTypes.count == n else {
            throw fail(.upBlockTypes, "\(upBlockTypes)", "as many up blocks as down_block_types (\(n))")
        }
        guard blockOutChannels.count == n else {
            throw fail(.blockOutChannels, "\(blockOutChannels)", "one entry per down block (\(n))")
        }
        guard let layers = layersPerBlock.perBlock(n), layers.allSatisfy({ $0 >= 1 }) else {
            throw fail(.layersPerBlock, "\(layersPerBlock)", "a positive count or one per down block (\(n))")
        }
        guard let heads = attentionHeadDim.perBlock(n), heads.allSatisfy({ $0 >= 1 }) else {
            throw fail(.attentionHeadDim, "\(attentionHeadDim)", "a positive head count or one per down block (\(n))")
        }
        guard let cross = crossAttentionDim.perBlock(n), cross.allSatisfy({ $0 >= 1 }) else {
            throw fail(.crossAttentionDim, "\(crossAttentionDim)", "a positive width or one per down block (\(n))")
        }
        guard let depths = transformerLayersPerBlock.perBlock(n) else {
            throw fail(.transformerLayersPerBlock, "\(transformerLayersPerBlock)", "a count or one entry per down block (\(n))")
        }
        let nested = depths.contains { if case .many = $0 { return true } else { return false } }
        if nested && reverseTransformerLayersPerBlock == nil {
            throw fail(.reverseTransformerLayersPerBlock, "null",
                       "per-up-block lists, required when transformer_layers_per_block holds lists")
        }
        for (i, depth) in depths.enumerated() {
            guard let perLayer = depth.perBlock(layers[i]), perLayer.allSatisfy({ $0 >= 1 }) else {
                throw fail(.transformerLayersPerBlock, "\(transformerLayersPerBlock)",
                           "positive counts; block \(i) needs one count or \(layers[i]) (one per resnet)")
            }
        }
        if let reverse = reverseTransformerLayersPerBlock {
            guard reverse.count == n else {
                throw fail(.reverseTransformerLayersPerBlock, "\(reverse)", "one entry per up block (\(n))")
            }
            for (i, depth) in reverse.enumerated() {
                let resnets = layers[n - 1 - i] + 1
                guard let perLayer = depth.perBlock(resnets), perLayer.allSatisfy({ $0 >= 1 }) else {
                    throw fail(.reverseTransformerLayersPerBlock, "\(reverse)",
                               "positive counts; up block \(i) needs one count or \(resnets) (one per resnet)")
                }
            }
        }
        for (i, ch) in blockOutChannels.enumerated() {
            guard ch > 0, ch % normNumGroups == 0 else {
                throw fail(.normNumGroups, "\(normNumGroups)", "a divisor of every block_out_channels entry (\(ch) is not a multiple)")
            }
            guard ch % heads[i] == 0 else {
                throw fail(.attentionHeadDim, "\(attentionHeadDim)", "head counts dividing block_out_channels (\(ch) by \(heads[i]))")
            }
        }
        guard inChannels >= 1 else { throw fail(.inChannels, "\(inChannels)", "a positive count") }
        guard outChannels >= 1 else { throw fail(.outChannels, "\(outChannels)", "a positive count") }
        guard convInKernel >= 1, convInKernel % 2 == 1 else { throw fail(.convInKernel, "\(convInKernel)", "an odd size") }
        guard convOutKernel >= 1, convOutKernel % 2 == 1 else { throw fail(.convOutKernel, "\(convOutKernel)", "an odd size") }
        if let t = timeEmbeddingDim, t < 1 { throw fail(.timeEmbeddingDim, "\(t)", "a positive width or null") }
        switch additionEmbedType {
        case nil: break
        case "text_time":
            guard let a = additionTimeEmbedDim, a >= 1 else {
                throw fail(.additionTimeEmbedDim, additionTimeEmbedDim.map { "\($0)" } ?? "null", "a positive width with text_time")
            }
            guard let p = projectionClassEmbeddingsInputDim, p > 6 * a else {
                throw fail(.projectionClassEmbeddingsInputDim, projectionClassEmbeddingsInputDim.map { "\($0)" } ?? "null",
                           "pooled text width + 6 · addition_time_embed_dim with text_time")
            }
        case let other?: throw fail(.additionEmbedType, "\"\(other)\"", "text_time, null")
        }
    }

    // MARK: derived per-block values

    var blockCount: Int { downBlockTypes.count }
    var timeEmbedWidth: Int { timeEmbeddingDim ?? 4 * blockOutChannels[0] }
    var headsPerBlock: [Int] { attentionHeadDim.perBlock(blockCount)! }
    var crossDimPerBlock: [Int] { crossAttentionDim.perBlock(blockCount)! }
    var layersPerDownBlock: [Int] { layersPerBlock.perBlock(blockCount)! }
    /// Transformer depth of each resnet's attention in down block `i`.
    func downDepths(_ i: Int) -> [Int] {
        transformerLayersPerBlock.perBlock(blockCount)![i].perBlock(layersPerDownBlock[i])!
    }
    /// Transformer depth of each resnet's attention in up block `i` (counted from the bottom).
    func upDepths(_ i: Int) -> [Int] {
        let resnets = layersPerDownBlock[blockCount - 1 - i] + 1
        if let reverse = reverseTransformerLayersPerBlock { return reverse[i].perBlock(resnets)! }
        return transformerLayersPerBlock.perBlock(blockCount)!.reversed()[i].perBlock(resnets)!
    }
    /// The mid block's transformer depth (diffusers takes the last block's entry).
    var midDepth: Int {
        switch transformerLayersPerBlock.perBlock(blockCount)!.last! {
        case .one(let d): return d
        case .many(let ds): return ds[0]
        }
    }
}

/// Any JSON value, kept as compact text: for comparing keys against their supported
/// defaults and quoting them in errors.
struct RawJSON: Codable {
    let text: String

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { text = "null" } else if let b = try? c.decode(Bool.self) { text = b ? "true" : "false" } else if let i = try? c.decode(Int.self) { text = "\(i)" } else if let x = try? c.decode(Double.self) { text = "\(x)" } else if let s = try? c.decode(String.self) { text = "\"\(s)\"" } else if let a = try? c.decode([RawJSON].self) { text = "[" + a.map(\.text).joined(separator: ", ") + "]" } else { text = "{…}" }
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch text {
        case "null": try c.encodeNil()
        case "true", "false": try c.encode(text == "true")
        default:
            if text.hasPrefix("\"") { try c.encode(String(text.dropFirst().dropLast())) } else if let i = Int(text) { try c.encode(i) } else if let x = Double(text) { try c.encode(x) } else { try c.encodeNil() }
        }
    }
}

extension UNet2DConditionConfig {
    /// Names accepted by `preset(_:)`.
    public static let presetNames = ["koala-700m", "koala-1b", "sdxl-base", "tiny", "tiny-sdxl"]

    /// A built-in config: `koala-700m`, `koala-1b`, `sdxl-base` (the published
    /// checkpoints' configs), `tiny-sdxl` (SDXL's structure at toy width, a distillation
    /// teacher) or `tiny` (KOALA-700M's structure at toy width, for tests
    /// and `model init --preset tiny`: cross-attention width 64 = two 32-wide CLIP
    /// encoders, pooled text width 32).
    public static func preset(_ name: String) throws -> UNet2DConditionConfig {
        switch name {
        case "koala-700m": return koala700M
        case "koala-1b": return koala1B
        case "sdxl-base": return sdxlBase
        case "tiny": return tiny
        case "tiny-sdxl": return tinySDXL
        default:
            throw ModelConfigError(key: "preset", value: "\"\(name)\"", supported: presetNames.joined(separator: ", "))
        }
    }

    /// SDXL-Base-1.0's U-Net (2,567,463,684 parameters).
    public static var sdxlBase: UNet2DConditionConfig {
        var c = UNet2DConditionConfig()
        c.sampleSize = .one(128)
        c.downBlockTypes = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
        c.upBlockTypes = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
        c.midBlockType = "UNetMidBlock2DCrossAttn"
        c.blockOutChannels = [320, 640, 1280]
        c.layersPerBlock = .one(2)
        c.transformerLayersPerBlock = .many([.one(1), .one(2), .one(10)])
        c.attentionHeadDim = .many([5, 10, 20])
        c.crossAttentionDim = .one(2048)
        c.useLinearProjection = true
        c.additionEmbedType = "text_time"
        c.additionTimeEmbedDim = 256
        c.projectionClassEmbeddingsInputDim = 2816
        return c
    }

    /// KOALA-1B's U-Net (1,161,184,324 parameters).
    public static var koala1B: UNet2DConditionConfig {
        var c = sdxlBase
        c.layersPerBlock = .one(1)
        c.transformerLayersPerBlock = .many([.one(1), .one(2), .one(6)])
        return c
    }

    /// KOALA-700M's U-Net (782,822,724 parameters): no mid block.
    public static var koala700M: UNet2DConditionConfig {
        var c = sdxlBase
        c.layersPerBlock = .one(1)
        c.transformerLayersPerBlock = .many([.one(1), .one(2), .one(5)])
        c.midBlockType = nil
        return c
    }

    /// SDXL's structure at `tiny`'s width (2 resnets per block, stacks [1, 2, 4], a mid
    /// block): a teacher that `tiny`, KOALA-700M's structure, distils from (4,466,372 parameters).
    public static var tinySDXL: UNet2DConditionConfig {
        var c = tiny
        c.layersPerBlock = .one(2)
        c.transformerLayersPerBlock = .many([.one(1), .one(2), .one(4)])
        c.midBlockType = "UNetMidBlock2DCrossAttn"
        return c
    }

    /// KOALA-700M's structure at toy width (1,707,364 parameters).
    public static var tiny: UNet2DConditionConfig {
        var c = koala700M
        c.sampleSize = .one(32)
        c.blockOutChannels = [32, 64, 64]
        c.normNumGroups = 8
        c.transformerLayersPerBlock = .many([.one(1), .one(1), .one(2)])
        c.attentionHeadDim = .many([2, 4, 4])
        c.crossAttentionDim = .one(64)
        c.additionTimeEmbedDim = 8
        c.projectionClassEmbeddingsInputDim = 32 + 6 * 8
        return c
    }
}
