import Foundation
import KoalaTensor

/// diffusers' `AutoencoderKL` config (the keys of `vae/config.json`). Keys missing from a
/// file take diffusers' defaults, as `from_pretrained` does.
public struct AutoencoderKLConfig: Codable, Sendable, Equatable {
    public var inChannels = 3
    public var outChannels = 3
    public var downBlockTypes = ["DownEncoderBlock2D"]
    public var upBlockTypes = ["UpDecoderBlock2D"]
    public var blockOutChannels = [64]
    public var layersPerBlock = 1
    public var actFn = "silu"
    public var latentChannels = 4
    public var normNumGroups = 32
    /// Image size the VAE was trained at; also the pixel size of one tile when tiling.
    public var sampleSize = 32
    /// The pipeline multiplies encoded latents by this (and divides before decoding).
    public var scalingFactor: Double = 0.18215
    public var shiftFactor: Double?
    public var latentsMean: [Double]?
    public var latentsStd: [Double]?
    /// diffusers runs the VAE in float32 when set (KoalaBooth always computes in float32).
    public var forceUpcast = true
    public var useQuantConv = true
    public var usePostQuantConv = true
    public var midBlockAddAttention = true

    enum CodingKeys: String, CodingKey {
        case className = "_class_name"
        case inChannels = "in_channels", outChannels = "out_channels"
        case downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
        case blockOutChannels = "block_out_channels", layersPerBlock = "layers_per_block", actFn = "act_fn"
        case latentChannels = "latent_channels", normNumGroups = "norm_num_groups", sampleSize = "sample_size"
        case scalingFactor = "scaling_factor", shiftFactor = "shift_factor"
        case latentsMean = "latents_mean", latentsStd = "latents_std", forceUpcast = "force_upcast"
        case useQuantConv = "use_quant_conv", usePostQuantConv = "use_post_quant_conv"
        case midBlockAddAttention = "mid_block_add_attention"
    }

    /// diffusers' defaults (`AutoencoderKL()`).
    public init() {}

    /// The SDXL VAE as `madebyollin/sdxl-vae-fp16-fix` configures it (the VAE KOALA uses;
    /// SDXL-Base's own `vae/` differs only in `sample_size` 1024 and `force_upcast` true).
    public static var sdxl: AutoencoderKLConfig {
        var c = AutoencoderKLConfig()
        c.blockOutChannels = [128, 256, 512, 512]
        c.downBlockTypes = Array(repeating: "DownEncoderBlock2D", count: 4)
        c.upBlockTypes = Array(repeating: "UpDecoderBlock2D", count: 4)
        c.layersPerBlock = 2
        c.sampleSize = 512
        c.scalingFactor = 0.13025
        c.forceUpcast = false
        return c
    }

    /// SDXL's structure (four blocks, so latents are 1/8 of the image) with narrow
    /// channels, for the tiny test pipeline.
    public static var tiny: AutoencoderKLConfig {
        var c = AutoencoderKLConfig.sdxl
        c.blockOutChannels = [8, 16, 32, 32]
        c.layersPerBlock = 1
        c.normNumGroups = 4
        c.sampleSize = 64
        return c
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = AutoencoderKLConfig()
        func value<T: Decodable>(_ key: CodingKeys, _ fallback: T) throws -> T {
            do { return try c.decodeIfPresent(T.self, forKey: key) ?? fallback } catch {
                throw ModelConfigError(key: key.rawValue, value: "of the wrong type", supported: "a value of type \(T.self)")
            }
        }
        inChannels = try value(.inChannels, d.inChannels)
        outChannels = try value(.outChannels, d.outChannels)
        downBlockTypes = try value(.downBlockTypes, d.downBlockTypes)
        upBlockTypes = try value(.upBlockTypes, d.upBlockTypes)
        blockOutChannels = try value(.blockOutChannels, d.blockOutChannels)
        layersPerBlock = try value(.layersPerBlock, d.layersPerBlock)
        actFn = try value(.actFn, d.actFn)
        latentChannels = try value(.latentChannels, d.latentChannels)
        normNumGroups = try value(.normNumGroups, d.normNumGroups)
        // diffusers also accepts a [height, width] pair and tiles by its first entry.
        if let sizes = try? c.decodeIfPresent([Int].self, forKey: .sampleSize), let first = sizes.first {
            sampleSize = first
        } else {
            sampleSize = try value(.sampleSize, d.sampleSize)
        }
        scalingFactor = try value(.scalingFactor, d.scalingFactor)
        shiftFactor = try value(.shiftFactor, d.shiftFactor)
        latentsMean = try value(.latentsMean, d.latentsMean)
        latentsStd = try value(.latentsStd, d.latentsStd)
        forceUpcast = try value(.forceUpcast, d.forceUpcast)
        useQuantConv = try value(.useQuantConv, d.useQuantConv)
        usePostQuantConv = try value(.usePostQuantConv, d.usePostQuantConv)
        midBlockAddAttention = try value(.midBlockAddAttention, d.midBlockAddAttention)
        try validate()
    }

    /// Throws `ModelConfigError` naming the first key whose value KoalaBooth cannot build.
    public func validate() throws {
        guard actFn == "silu" else { throw ModelConfigError(key: "act_fn", value: "\"\(actFn)\"", supported: "silu") }
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 }) else {
            throw ModelConfigError(key: "block_out_channels", value: "\(blockOutChannels)", supported: "a non-empty list of positive channel counts")
        }
        if let bad = downBlockTypes.first(where: { $0 != "DownEncoderBlock2D" }) {
            throw ModelConfigError(key: "down_block_types", value: "containing \"\(bad)\"", supported: "DownEncoderBlock2D")
        }
        if let bad = upBlockTypes.first(where: { $0 != "UpDecoderBlock2D" }) {
            throw ModelConfigError(key: "up_block_types", value: "containing \"\(bad)\"", supported: "UpDecoderBlock2D")
        }
        guard downBlockTypes.count == blockOutChannels.count else {
            throw ModelConfigError(key: "down_block_types", value: "with \(downBlockTypes.count) entries",
                                   supported: "one entry per block_out_channels entry (\(blockOutChannels.count))")
        }
        guard upBlockTypes.count == blockOutChannels.count else {
            throw ModelConfigError(key: "up_block_types", value: "with \(upBlockTypes.count) entries",
                                   supported: "one entry per block_out_channels entry (\(blockOutChannels.count))")
        }
        guard normNumGroups > 0, blockOutChannels.allSatisfy({ $0 % normNumGroups == 0 }) else {
            throw ModelConfigError(key: "norm_num_groups", value: "\(normNumGroups)", supported: "a divisor of every block_out_channels entry \(blockOutChannels)")
        }
        guard layersPerBlock >= 1 else {
            throw ModelConfigError(key: "layers_per_block", value: "\(layersPerBlock)", supported: "1 or more")
        }
        for (key, v) in [("in_channels", inChannels), ("out_channels", outChannels), ("latent_channels", latentChannels), ("sample_size", sampleSize)] where v < 1 {
            throw ModelConfigError(key: key, value: "\(v)", supported: "a positive integer")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("AutoencoderKL", forKey: .className)
        try c.encode(inChannels, forKey: .inChannels)
        try c.encode(outChannels, forKey: .outChannels)
        try c.encode(downBlockTypes, forKey: .downBlockTypes)
        try c.encode(upBlockTypes, forKey: .upBlockTypes)
        try c.encode(blockOutChannels, forKey: .blockOutChannels)
        try c.encode(layersPerBlock, forKey: .layersPerBlock)
        try c.encode(actFn, forKey: .actFn)
        try c.encode(latentChannels, forKey: .latentChannels)
        try c.encode(normNumGroups, forKey: .normNumGroups)
        try c.encode(sampleSize, forKey: .sampleSize)
        try c.encode(scalingFactor, forKey: .scalingFactor)
        try c.encode(shiftFactor, forKey: .shiftFactor)
        try c.encode(latentsMean, forKey: .latentsMean)
        try c.encode(latentsStd, forKey: .latentsStd)
        try c.encode(forceUpcast, forKey: .forceUpcast)
        try c.encode(useQuantConv, forKey: .useQuantConv)
        try c.encode(usePostQuantConv, forKey: .usePostQuantConv)
        try c.encode(midBlockAddAttention, forKey: .midBlockAddAttention)
    }
}

/// The encoder's posterior: a diagonal Gaussian per latent element, as diffusers'
/// `DiagonalGaussianDistribution`.
public struct DiagonalGaussianDistribution {
    /// [B, latent, h, w].
    public let mean: Tensor
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    public let logvar: Tensor
    /// exp(logvar / 2).
    public let std: Tensor

    /// Splits moments [B, 2·latent, h, w] into mean and log-variance.
    public init(moments: Tensor) {
        precondition(moments.rank == 4 && moments.shape[1] % 2 == 0, "DiagonalGaussianDistribution: moments \(moments.shape) are not [B, 2·latent, h, w]")
        let parts = moments.chunk(2, dim: 1)
        mean = parts[0].contiguous()
        logvar = parts[1].clamped(min: -30, max: 20)
        std = (logvar * 0.5).exp()
    }

    /// exp(logvar).
    public var variance: Tensor { logvar.exp() }

    /// mean + std · ε with ε ~ N(0, 1) from `generator` (diffusers' `sample`; its values
    /// differ from torch's for the same seed, the distribution does not).
    public func sample(generator: inout RandomGenerator) -> Tensor {
        mean + std * Tensor.randn(mean.shape, generator: &generator)
    }

    /// The most likely latent: the mean.
    public func mode() -> Tensor { mean }
}

/// diffusers' `AutoencoderKL`: the SDXL VAE. Parameter paths are diffusers' state-dict keys.
///
/// Latents here are the VAE's raw latents. The SDXL pipeline multiplies encoded latents
/// by `config.scalingFactor` for the U-Net and divides by it before `decode`; neither
/// `encode` nor `decode` scales, as in diffusers.
///
/// Inference should run under `noGrad { }` so no activations are kept. Tiled paths
/// (`tiled: true`) always run without gradients: they blend tiles in place.
public final class AutoencoderKL: Module {
    public let config: AutoencoderKLConfig
    public let encoder: VAEEncoder
    public let decoder: VAEDecoder
    public let quantConv: Conv2d?
    public let postQuantConv: Conv2d?

    /// Pixel size of one tile (diffusers' `tile_sample_min_size`): `config.sampleSize`
    /// by default. Lower it to bound memory further (SDXL-Base's config says 1024, which
    /// does not tile a 1024x1024 image; 512 decodes it in 9 tiles).
    public var tileSampleSize: Int
    /// Fraction of a tile that overlaps its neighbour (diffusers' `tile_overlap_factor`).
    public var tileOverlapFactor = 0.25

    public init(config c: AutoencoderKLConfig, init p: ParameterInitializer) {
        precondition((try? c.validate()) != nil, "AutoencoderKL: invalid config; decode configs with JSONDecoder or call validate()")
        config = c
        encoder = VAEEncoder(config: c, init: p)
        decoder = VAEDecoder(config: c, init: p)
        quantConv = c.useQuantConv ? Conv2d(2 * c.latentChannels, 2 * c.latentChannels, kernelSize: 1, init: p) : nil
        postQuantConv = c.usePostQuantConv ? Conv2d(c.latentChannels, c.latentChannels, kernelSize: 1, init: p) : nil
        tileSampleSize = c.sampleSize
    }

    public var entries: [(String, ModuleEntry)] {
        [("encoder", .module(encoder)), ("decoder", .module(decoder))]
            + (quantConv.map { [("quant_conv", .module($0))] } ?? [])
            + (postQuantConv.map { [("post_quant_conv", .module($0))] } ?? [])
    }

    /// Image size over latent size: 2^(blocks − 1), 8 for SDXL.
    public var downscaleFactor: Int { 1 << (config.blockOutChannels.count - 1) }

    /// Latent size of one tile (diffusers' `tile_latent_min_size`).
    public var tileLatentSize: Int { tileSampleSize / downscaleFactor }

    /// Encodes images [B, in, H, W] with values in [-1, 1] (H, W multiples of the
    /// downscale factor). With `tiled`, images larger than `tileSampleSize` are encoded in
    /// overlapping tiles blended together, as diffusers with `enable_tiling()`.
    public func encode(_ images: Tensor, tiled: Bool = false) -> DiagonalGaussianDistribution {
        precondition(images.rank == 4 && images.shape[1] == config.inChannels,
                     "AutoencoderKL.encode: images \(images.shape) are not [B, \(config.inChannels), H, W]")
        if tiled && (images.shape[2] > tileSampleSize || images.shape[3] > tileSampleSize) {
            return DiagonalGaussianDistribution(moments: tiledEncodeMoments(images))
        }
        return DiagonalGaussianDistribution(moments: encodeMoments(images))
    }

    /// Decodes raw latents [B, latent, h, w] (already divided by the scaling factor) to
    /// images [B, out, h·f, w·f] in about [-1, 1]. With `tiled`, latents larger than
    /// `tileLatentSize` are decoded in overlapping tiles blended together, as diffusers
    /// with `enable_tiling()`, so memory depends on the tile size, not the image size.
    public func decode(_ latents: Tensor, tiled: Bool = false) -> Tensor {
        precondition(latents.rank == 4 && latents.shape[1] == config.latentChannels,
                     "AutoencoderKL.decode: latents \(latents.shape) are not [B, \(config.latentChannels), h, w]")
        if tiled && (latents.shape[2] > tileLatentSize || latents.shape[3] > tileLatentSize) {
            return tiledDecode(latents)
        }
        return decodeTile(latents)
    }

    /// diffusers' `tiled_decode`: latent tiles of `tileLatentSize` every
    /// `tileLatentSize · (1 − overlap)`, each decoded alone, blended linearly over
    /// `tileSampleSize · overlap` pixels with the tile above and to the left, then cropped.
    public func tiledDecode(_ latents: Tensor) -> Tensor {
        noGrad { tiled(latents, inTile: tileLatentSize, outTile: tileSampleSize, decodeTile) }
    }

    private func tiledEncodeMoments(_ images: Tensor) -> Tensor {
        noGrad { tiled(images, inTile: tileSampleSize, outTile: tileLatentSize, encodeMoments) }
    }

    private func encodeMoments(_ images: Tensor) -> Tensor {
        let h = encoder(images)
        return quantConv?(h) ?? h
    }

    private func decodeTile(_ latents: Tensor) -> Tensor {
        decoder(postQuantConv?(latents) ?? latents)
    }

    /// Runs `body` on overlapping tiles of `x` and stitches the results as diffusers'
    /// `tiled_decode` / `_tiled_encode` do. Only the row above is kept.
    private func tiled(_ x: Tensor, inTile: Int, outTile: Int, _ body: (Tensor) -> Tensor) -> Tensor {
        // Python's int() truncation of the same float products.
        let step = Int(Double(inTile) * (1 - tileOverlapFactor))
        let blend = Int(Double(outTile) * tileOverlapFactor)
        let limit = outTile - blend
        precondition(step > 0 && limit > 0, "AutoencoderKL: tile size \(inTile) with overlap \(tileOverlapFactor) leaves no stride")
        let height = x.shape[2], width = x.shape[3]
        var above: [Tensor] = [], rows: [Tensor] = []
        for i in stride(from: 0, to: height, by: step) {
            var row: [Tensor] = []
            for j in stride(from: 0, to: width, by: step) {
                let tile = x.slice(2, i, min(i + inTile, height)).slice(3, j, min(j + inTile, width))
                let out = body(tile.contiguous()).contiguous()
                // Blends use the neighbours as already blended, as diffusers' in-place blends do.
                if !above.isEmpty { Self.blendVertical(above[row.count], into: out, extent: blend) }
                if let left = row.last { Self.blendHorizontal(left, into: out, extent: blend) }
                row.append(out)
            }
            rows.append(Tensor.cat(row.map { $0.slice(2, 0, min(limit, $0.shape[2])).slice(3, 0, min(limit, $0.shape[3])) }, dim: 3))
            above = row
        }
        return Tensor.cat(rows, dim: 2)
    }

    /// diffusers' `blend_v`: the first rows of `b` fade in from the last rows of `a`.
    static func blendVertical(_ a: Tensor, into b: Tensor, extent: Int) {
        let e = min(a.shape[2], b.shape[2], extent)
        guard e > 0 else { return }
        precondition(a.shape[0] == b.shape[0] && a.shape[1] == b.shape[1] && a.shape[3] == b.shape[3],
                     "blendVertical: tiles \(a.shape) and \(b.shape) do not line up")
        let planes = b.shape[0] * b.shape[1], w = b.shape[3], ha = a.shape[2], hb = b.shape[2]
        let src = a.data, dst = b.data
        Parallel.forEach(planes, grain: 1) { range in
            for p in range {
                for y in 0..<e {
                    let t = Double(y) / Double(e)
                    let wa = Float(1 - t), wb = Float(t)
                    let s = src + (p * ha + ha - e + y) * w, d = dst + (p * hb + y) * w
                    for q in 0..<w { d[q] = s[q] * wa + d[q] * wb }
                }
            }
        }
    }

    /// diffusers' `blend_h`: the first columns of `b` fade in from the last columns of `a`.
    static func blendHorizontal(_ a: Tensor, into b: Tensor, extent: Int) {
        let e = min(a.shape[3], b.shape[3], extent)
        guard e > 0 else { return }
        precondition(a.shape[0] == b.shape[0] && a.shape[1] == b.shape[1] && a.shape[2] == b.shape[2],
                     "blendHorizontal: tiles \(a.shape) and \(b.shape) do not line up")
        let rows = b.shape[0] * b.shape[1] * b.shape[2], wa = a.shape[3], wb = b.shape[3]
        let weights = (0..<e).map { x -> (Float, Float) in
            let t = Double(x) / Double(e)
            return (Float(1 - t), Float(t))
        }
        let src = a.data, dst = b.data
        weights.withUnsafeBufferPointer { wts in
            Parallel.forEach(rows, grain: max(1, 4096 / e)) { range in
                for r in range {
                    let s = src + r * wa + wa - e, d = dst + r * wb
                    for x in 0..<e { d[x] = s[x] * wts[x].0 + d[x] * wts[x].1 }
                }
            }
        }
    }

    /// Loads a state dict with current diffusers keys, or with the attention names older
    /// checkpoints use (`query`, `key`, `value`, `proj_attn`), which diffusers also maps.
    @discardableResult
    public func load(keys: Set<String>, _ lookup: (String) throws -> Tensor) throws -> LoadReport {
        let legacy = ["query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"]
        var current: [String: String] = [:], inFile: [String: String] = [:]  // both directions
        for key in keys {
            let parts = key.split(separator: ".").map(String.init)
            guard parts.count >= 3, parts.contains("attentions"), let renamed = legacy[parts[parts.count - 2]] else { continue }
            let name = (parts.dropLast(2) + [renamed, parts.last!]).joined(separator: ".")
            current[key] = name
            inFile[name] = key
        }
        if current.isEmpty { return try loadExactKeys(keys, lookup) }
        let mapped = Set(keys.map { current[$0] ?? $0 })
        return try loadExactKeys(mapped) { key in
            guard let original = inFile[key] else { return try lookup(key) }
            let t = try lookup(original)
            // Very old checkpoints store these projections as 1x1 convolutions.
            return t.rank == 4 && t.shape[2] == 1 && t.shape[3] == 1 ? t.reshape([t.shape[0], t.shape[1]]) : t
        }
    }
}

extension Tensor {
    /// Values limited to [min, max], as `torch.clamp`; the gradient flows where the
    /// input lies inside the closed interval.
    func clamped(min lo: Float, max hi: Float) -> Tensor {
        let x = contiguous()
        let out = Tensor(empty: shape)
        let n = count, src = x.data, dst = out.data
        Parallel.forEach(n, grain: 16384) { r in
            for i in r { dst[i] = Swift.min(Swift.max(src[i], lo), hi) }
        }
        return record(out, [x], "clamp") { g, _ in
            let gc = g.contiguous()
            let gx = Tensor(empty: x.shape)
            let xs = x.data, gs = gc.data, gd = gx.data
            Parallel.forEach(n, grain: 16384) { r in
                for i in r { gd[i] = xs[i] >= lo && xs[i] <= hi ? gs[i] : 0 }
            }
            return [gx]
        }
    }
}
