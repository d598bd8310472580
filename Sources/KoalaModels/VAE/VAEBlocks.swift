import KoalaTensor

/// diffusers' `ResnetBlock2D` as the VAE builds it: no time embedding, GroupNorm eps
/// 1e-6, SiLU, output scale 1, and a 1x1 `conv_shortcut` when the channel count changes.
public final class VAEResnetBlock2D: Module {
    public let norm1: GroupNorm, conv1: Conv2d
    public let norm2: GroupNorm, conv2: Conv2d
    public let convShortcut: Conv2d?

    public init(inChannels: Int, outChannels: Int, groups: Int, init p: ParameterInitializer) {
        norm1 = GroupNorm(groups: groups, channels: inChannels, eps: 1e-6, init: p)
        conv1 = Conv2d(inChannels, outChannels, kernelSize: 3, padding: 1, init: p)
        norm2 = GroupNorm(groups: groups, channels: outChannels, eps: 1e-6, init: p)
        conv2 = Conv2d(outChannels, outChannels, kernelSize: 3, padding: 1, init: p)
        convShortcut = inChannels == outChannels ? nil : Conv2d(inChannels, outChannels, kernelSize: 1, init: p)
    }

    public var entries: [(String, ModuleEntry)] {
        [("norm1", .module(norm1)), ("conv1", .module(conv1)), ("norm2", .module(norm2)), ("conv2", .module(conv2))]
            + (convShortcut.map { [("conv_shortcut", .module($0))] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        // Nested calls so each intermediate is released as soon as the next op has run.
        let h = conv2(norm2.silu(conv1(norm1.silu(x))))
        return (convShortcut?(x) ?? x) + h
    }
}

/// The VAE's spatial self-attention: diffusers' `Attention` built from the deprecated
/// attention block (group norm on the input, one head as wide as the channels, biased
/// `to_q`/`to_k`/`to_v`/`to_out.0` linear maps over the channels, residual connection).
public final class VAEAttention: Module {
    public let groupNorm: GroupNorm
    public let toQ, toK, toV, toOut: Linear
    let heads: Int

    public init(channels: Int, groups: Int, headDim: Int, init p: ParameterInitializer) {
        precondition(channels % headDim == 0, "VAEAttention: \(channels) channels do not split into heads of \(headDim)")
        groupNorm = GroupNorm(groups: groups, channels: channels, eps: 1e-6, init: p)
        toQ = Linear(channels, channels, init: p); toK = Linear(channels, channels, init: p)
        toV = Linear(channels, channels, init: p); toOut = Linear(channels, channels, init: p)
        heads = channels / headDim
    }

    public var entries: [(String, ModuleEntry)] {
        [("group_norm", .module(groupNorm)), ("to_q", .module(toQ)), ("to_k", .module(toK)), ("to_v", .module(toV)),
         ("to_out", .list([toOut]))]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let l = h * w, d = c / heads
        // Tokens [B, H·W, C], made contiguous once for the three projections.
        let tokens = groupNorm(x).reshape([b, c, l]).transposed(1, 2).contiguous()
        func split(_ t: Tensor) -> Tensor { t.reshape([b, l, heads, d]).permute([0, 2, 1, 3]) }
        let o = Tensor.scaledDotProductAttention(query: split(toQ(tokens)), key: split(toK(tokens)), value: split(toV(tokens)))
        let projected = toOut(o.permute([0, 2, 1, 3]).reshape([b, l, c]))
        return projected.transposed(1, 2).contiguous().reshape([b, c, h, w]) + x
    }
}

/// diffusers' `UNetMidBlock2D` as the VAE builds it: resnet, then (attention, resnet)
/// once; without `mid_block_add_attention` the attention is left out.
public final class UNetMidBlock2D: Module {
    public let resnets: [VAEResnetBlock2D]
    public let attentions: [VAEAttention]

    public init(channels: Int, groups: Int, addAttention: Bool, init p: ParameterInitializer) {
        let first = VAEResnetBlock2D(inChannels: channels, outChannels: channels, groups: groups, init: p)
        let attention = addAttention ? VAEAttention(channels: channels, groups: groups, headDim: channels, init: p) : nil
        let second = VAEResnetBlock2D(inChannels: channels, outChannels: channels, groups: groups, init: p)
        resnets = [first, second]
        attentions = attention.map { [$0] } ?? []
    }

    public var entries: [(String, ModuleEntry)] {
        (attentions.isEmpty ? [] : [("attentions", .list(attentions))]) + [("resnets", .list(resnets))]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = resnets[0](x)
        if let attention = attentions.first { h = attention(h) }
        return resnets[1](h)
    }
}

/// What a VAE block of resnets ends with: a downsampler (encoder) or an upsampler
/// (decoder), listed under diffusers' attribute name.
public protocol VAEResampler: Module {
    /// `downsamplers` or `upsamplers`.
    static var entryName: String { get }
    /// As the VAE's blocks make it.
    static func forVAE(channels: Int, init p: ParameterInitializer) -> Self
    func callAsFunction(_ x: Tensor) -> Tensor
}

extension Downsample2D: VAEResampler {
    public static let entryName = "downsamplers"
    public static func forVAE(channels: Int, init p: ParameterInitializer) -> Self { Self(channels: channels, padding: 0, init: p) }
}

extension Upsample2D: VAEResampler {
    public static let entryName = "upsamplers"
    public static func forVAE(channels: Int, init p: ParameterInitializer) -> Self { Self(channels: channels, init: p) }
}

/// diffusers' `DownEncoderBlock2D` (`layers` resnets, then a stride-2 downsampler) and
/// `UpDecoderBlock2D` (the decoder passes `layers_per_block + 1` resnets, then a 2x
/// upsampler); the last block of either has no resampler.
public final class VAEResnetStack2D<Resampler: VAEResampler>: Module {
    public let resnets: [VAEResnetBlock2D]
    public let resampler: Resampler?

    public init(inChannels: Int, outChannels: Int, layers: Int, groups: Int, addResampler: Bool, init p: ParameterInitializer) {
        resnets = (0..<layers).map {
            VAEResnetBlock2D(inChannels: $0 == 0 ? inChannels : outChannels, outChannels: outChannels, groups: groups, init: p)
        }
        resampler = addResampler ? Resampler.forVAE(channels: outChannels, init: p) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        [("resnets", .list(resnets))] + (resampler.map { [(Resampler.entryName, .list([$0]))] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for resnet in resnets { h = resnet(h) }
        return resampler?(h) ?? h
    }
}

public typealias DownEncoderBlock2D = VAEResnetStack2D<Downsample2D>
public typealias UpDecoderBlock2D = VAEResnetStack2D<Upsample2D>
