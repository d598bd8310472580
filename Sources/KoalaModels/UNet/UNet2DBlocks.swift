import KoalaTensor

/// What every U-Net block gets besides its input.
public struct UNetBlockContext {
    /// `silu(time embedding)`, [B, temb].
    public let tembActivated: Tensor
    /// Text conditioning, [B, S, crossAttentionDim].
    public let encoderHiddenStates: Tensor
    /// Recompute resnets and transformer blocks during backward instead of keeping
    /// their activations.
    public let checkpointing: Bool
    /// Where the block runs, when features are recorded (distillation); else nil.
    public var features: UNetFeatureScope?

    public init(tembActivated: Tensor, encoderHiddenStates: Tensor, checkpointing: Bool = false,
                features: UNetFeatureScope? = nil) {
        self.tembActivated = tembActivated
        self.encoderHiddenStates = encoderHiddenStates
        self.checkpointing = checkpointing
        self.features = features
    }

    /// The context of the child module `name` (the name is only built when recording).
    func within(_ name: @autoclosure () -> String) -> UNetBlockContext {
        guard let features else { return self }
        var c = self
        c.features = features.child(name())
        return c
    }
}

/// A resnet, checkpointed when asked (diffusers checkpoints each resnet the same way).
func runResnet(_ resnet: ResnetBlock2D, _ x: Tensor, _ ctx: UNetBlockContext) -> Tensor {
    ctx.checkpointing ? checkpoint([x, ctx.tembActivated]) { resnet($0[0], $0[1]) } : resnet(x, ctx.tembActivated)
}

/// A down block: returns its output and the states the up blocks take as skips
/// (one per resnet, plus the downsampled output).
public protocol UNetDownBlock: Module {
    func callAsFunction(_ x: Tensor, _ ctx: UNetBlockContext) -> (Tensor, [Tensor])
}

/// An up block: pops one skip per resnet off the end of the down blocks' skip stack
/// (so each is freed as soon as it has been used).
public protocol UNetUpBlock: Module {
    func callAsFunction(_ x: Tensor, skips: inout [Tensor], _ ctx: UNetBlockContext) -> Tensor
}

/// diffusers' `DownBlock2D`: resnets, then an optional downsampler.
public final class DownBlock2D: UNetDownBlock {
    public let resnets: [ResnetBlock2D]
    public let downsampler: Downsample2D?

    public init(inChannels: Int, outChannels: Int, tembChannels: Int, layers: Int, groups: Int, eps: Float,
                addDownsample: Bool, init p: ParameterInitializer) {
        resnets = (0..<layers).map { i in
            ResnetBlock2D(inChannels: i == 0 ? inChannels : outChannels, outChannels: outChannels,
                          tembChannels: tembChannels, groups: groups, eps: eps, init: p)
        }
        downsampler = addDownsample ? Downsample2D(channels: outChannels, init: p) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        [("resnets", .list(resnets))] + (downsampler.map { [("downsamplers", .list([$0]))] } ?? [])
    }

    public func callAsFunction(_ x: Tensor, _ ctx: UNetBlockContext) -> (Tensor, [Tensor]) {
        var h = x
        var states: [Tensor] = []
        for resnet in resnets {
            h = runResnet(resnet, h, ctx)
            states.append(h)
        }
        if let downsampler {
            h = downsampler(h)
            states.append(h)
        }
        return (h, states)
    }
}

/// The (resnet, transformer) pairs of a cross-attention block, made in diffusers' order:
/// resnet `i` maps `widths[i]` channels to `outChannels`, transformer `i` has `depths[i]`
/// layers.
private func crossAttentionPairs(widths: [Int], depths: [Int], outChannels: Int, tembChannels: Int, heads: Int,
                                 crossAttentionDim: Int, groups: Int, eps: Float, useLinearProjection: Bool,
                                 init p: ParameterInitializer) -> ([ResnetBlock2D], [Transformer2DModel]) {
    var res: [ResnetBlock2D] = [], attn: [Transformer2DModel] = []
    for (width, depth) in zip(widths, depths) {
        res.append(ResnetBlock2D(inChannels: width, outChannels: outChannels, tembChannels: tembChannels,
                                 groups: groups, eps: eps, init: p))
        attn.append(Transformer2DModel(heads: heads, dimHead: outChannels / heads, inChannels: outChannels, layers: depth,
                                       crossAttentionDim: crossAttentionDim, groups: groups,
                                       useLinearProjection: useLinearProjection, init: p))
    }
    return (res, attn)
}

/// diffusers' `CrossAttnDownBlock2D`: (resnet, transformer) pairs, then an optional
/// downsampler.
public final class CrossAttnDownBlock2D: UNetDownBlock {
    public let attentions: [Transformer2DModel]
    public let resnets: [ResnetBlock2D]
    public let downsampler: Downsample2D?

    /// `depths`: transformer blocks per attention, one per resnet.
    public init(inChannels: Int, outChannels: Int, tembChannels: Int, depths: [Int], heads: Int, crossAttentionDim: Int,
                groups: Int, eps: Float, useLinearProjection: Bool, addDownsample: Bool, init p: ParameterInitializer) {
        (resnets, attentions) = crossAttentionPairs(
            widths: depths.indices.map { $0 == 0 ? inChannels : outChannels }, depths: depths, outChannels: outChannels,
            tembChannels: tembChannels, heads: heads, crossAttentionDim: crossAttentionDim, groups: groups, eps: eps,
            useLinearProjection: useLinearProjection, init: p)
        downsampler = addDownsample ? Downsample2D(channels: outChannels, init: p) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        [("attentions", .list(attentions)), ("resnets", .list(resnets))]
            + (downsampler.map { [("downsamplers", .list([$0]))] } ?? [])
    }

    public func callAsFunction(_ x: Tensor, _ ctx: UNetBlockContext) -> (Tensor, [Tensor]) {
        var h = x
        var states: [Tensor] = []
        for (j, (resnet, attention)) in zip(resnets, attentions).enumerated() {
            h = runResnet(resnet, h, ctx)
            h = attention(h, context: ctx.encoderHiddenStates, checkpointing: ctx.checkpointing,
                          features: ctx.features?.child("attentions.\(j)"))
            states.append(h)
        }
        if let downsampler {
            h = downsampler(h)
            states.append(h)
        }
        return (h, states)
    }
}

/// Input widths of an up block's resnets: the previous block's output (first) or this
/// block's width, plus the skip's width (the last skip comes from the level above).
private func upResnetChannels(inChannels: Int, prevOutputChannels: Int, outChannels: Int, layers: Int) -> [Int] {
    (0..<layers).map { i in
        (i == 0 ? prevOutputChannels : outChannels) + (i == layers - 1 ? inChannels : outChannels)
    }
}

/// diffusers' `UpBlock2D`: resnets over the input concatenated with each skip, then
/// an optional upsampler.
public final class UpBlock2D: UNetUpBlock {
    public let resnets: [ResnetBlock2D]
    public let upsampler: Upsample2D?

    public init(inChannels: Int, prevOutputChannels: Int, outChannels: Int, tembChannels: Int, layers: Int,
                groups: Int, eps: Float, addUpsample: Bool, init p: ParameterInitializer) {
        resnets = upResnetChannels(inChannels: inChannels, prevOutputChannels: prevOutputChannels,
                                   outChannels: outChannels, layers: layers).map {
            ResnetBlock2D(inChannels: $0, outChannels: outChannels, tembChannels: tembChannels, groups: groups, eps: eps, init: p)
        }
        upsampler = addUpsample ? Upsample2D(channels: outChannels, init: p) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        [("resnets", .list(resnets))] + (upsampler.map { [("upsamplers", .list([$0]))] } ?? [])
    }

    public func callAsFunction(_ x: Tensor, skips: inout [Tensor], _ ctx: UNetBlockContext) -> Tensor {
        precondition(skips.count >= resnets.count, "UpBlock2D: \(skips.count) skips left for \(resnets.count) resnets")
        var h = x
        for resnet in resnets {
            h = runResnet(resnet, Tensor.cat([h, skips.removeLast()], dim: 1), ctx)
        }
        return upsampler.map { $0(h) } ?? h
    }
}

/// diffusers' `CrossAttnUpBlock2D`: (resnet over input ⧺ skip, transformer) pairs, then
/// an optional upsampler.
public final class CrossAttnUpBlock2D: UNetUpBlock {
    public let attentions: [Transformer2DModel]
    public let resnets: [ResnetBlock2D]
    public let upsampler: Upsample2D?

    /// `depths`: transformer blocks per attention, one per resnet.
    public init(inChannels: Int, prevOutputChannels: Int, outChannels: Int, tembChannels: Int, depths: [Int], heads: Int,
                crossAttentionDim: Int, groups: Int, eps: Float, useLinearProjection: Bool, addUpsample: Bool,
                init p: ParameterInitializer) {
        let widths = upResnetChannels(inChannels: inChannels, prevOutputChannels: prevOutputChannels,
                                      outChannels: outChannels, layers: depths.count)
        (resnets, attentions) = crossAttentionPairs(
            widths: widths, depths: depths, outChannels: outChannels, tembChannels: tembChannels, heads: heads,
            crossAttentionDim: crossAttentionDim, groups: groups, eps: eps, useLinearProjection: useLinearProjection, init: p)
        upsampler = addUpsample ? Upsample2D(channels: outChannels, init: p) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        [("attentions", .list(attentions)), ("resnets", .list(resnets))]
            + (upsampler.map { [("upsamplers", .list([$0]))] } ?? [])
    }

    public func callAsFunction(_ x: Tensor, skips: inout [Tensor], _ ctx: UNetBlockContext) -> Tensor {
        precondition(skips.count >= resnets.count, "CrossAttnUpBlock2D: \(skips.count) skips left for \(resnets.count) resnets")
        var h = x
        for (j, (resnet, attention)) in zip(resnets, attentions).enumerated() {
            h = runResnet(resnet, Tensor.cat([h, skips.removeLast()], dim: 1), ctx)
            h = attention(h, context: ctx.encoderHiddenStates, checkpointing: ctx.checkpointing,
                          features: ctx.features?.child("attentions.\(j)"))
        }
        return upsampler.map { $0(h) } ?? h
    }
}

/// diffusers' `UNetMidBlock2DCrossAttn` with one layer: resnet, transformer, resnet.
public final class UNetMidBlock2DCrossAttn: Module {
    public let attentions: [Transformer2DModel]
    public let resnets: [ResnetBlock2D]

    public init(channels: Int, tembChannels: Int, depth: Int, heads: Int, crossAttentionDim: Int, groups: Int, eps: Float,
                outputScaleFactor: Float, useLinearProjection: Bool, init p: ParameterInitializer) {
        func resnet() -> ResnetBlock2D {
            ResnetBlock2D(inChannels: channels, outChannels: channels, tembChannels: tembChannels, groups: groups, eps: eps,
                          outputScaleFactor: outputScaleFactor, init: p)
        }
        let first = resnet()
        attentions = [Transformer2DModel(heads: heads, dimHead: channels / heads, inChannels: channels, layers: depth,
                                         crossAttentionDim: crossAttentionDim, groups: groups,
                                         useLinearProjection: useLinearProjection, init: p)]
        resnets = [first, resnet()]
    }

    public var entries: [(String, ModuleEntry)] { [("attentions", .list(attentions)), ("resnets", .list(resnets))] }

    public func callAsFunction(_ x: Tensor, _ ctx: UNetBlockContext) -> Tensor {
        var h = runResnet(resnets[0], x, ctx)
        for (j, (attention, resnet)) in zip(attentions, resnets.dropFirst()).enumerated() {
            h = attention(h, context: ctx.encoderHiddenStates, checkpointing: ctx.checkpointing,
                          features: ctx.features?.child("attentions.\(j)"))
            h = runResnet(resnet, h, ctx)
        }
        return h
    }
}
