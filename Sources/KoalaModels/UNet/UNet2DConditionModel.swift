import KoalaTensor

/// diffusers' `UNet2DConditionModel` for the SDXL family (SDXL-Base, KOALA-1B,
/// KOALA-700M): parameter paths are diffusers' state-dict keys, and the forward pass
/// computes what diffusers' does in float32.
public final class UNet2DConditionModel: Module {
    public let config: UNet2DConditionConfig
    public let convIn: Conv2d
    public let timeProj: Timesteps
    public let timeEmbedding: TimestepEmbedding
    /// SDXL micro-conditioning (`addition_embed_type: text_time`), else nil.
    public let addTimeProj: Timesteps?
    public let addEmbedding: TimestepEmbedding?
    public let downBlocks: [any UNetDownBlock]
    public let midBlock: UNetMidBlock2DCrossAttn?
    public let upBlocks: [any UNetUpBlock]
    public let convNormOut: GroupNorm
    public let convOut: Conv2d
    /// Recompute each resnet and transformer block during backward instead of keeping
    /// its activations (training memory drops to roughly the blocks' inputs).
    public var gradientCheckpointing = false

    /// Builds the model with parameters from `p` (seeded random, or uninitialised for
    /// loading). `config` must pass `validate()` (decoded configs and presets do).
    public init(config c: UNet2DConditionConfig, init p: ParameterInitializer) {
        do { try c.validate() } catch { preconditionFailure("UNet2DConditionModel: \(error)") }
        config = c
        let channels = c.blockOutChannels, n = c.blockCount
        let temb = c.timeEmbedWidth, groups = c.normNumGroups, eps = c.normEps
        let heads = c.headsPerBlock, cross = c.crossDimPerBlock, layers = c.layersPerDownBlock

        convIn = Conv2d(c.inChannels, channels[0], kernelSize: c.convInKernel, padding: (c.convInKernel - 1) / 2, init: p)
        timeProj = Timesteps(dim: channels[0], flipSinToCos: c.flipSinToCos, downscaleFreqShift: c.freqShift)
        timeEmbedding = TimestepEmbedding(inChannels: channels[0], timeEmbedDim: temb, init: p)
        if c.additionEmbedType == "text_time" {
            addTimeProj = Timesteps(dim: c.additionTimeEmbedDim!, flipSinToCos: c.flipSinToCos, downscaleFreqShift: c.freqShift)
            addEmbedding = TimestepEmbedding(inChannels: c.projectionClassEmbeddingsInputDim!, timeEmbedDim: temb, init: p)
        } else {
            addTimeProj = nil
            addEmbedding = nil
        }

        var down: [any UNetDownBlock] = []
        for i in 0..<n {
            let inCh = i == 0 ? channels[0] : channels[i - 1], last = i == n - 1
            if c.downBlockTypes[i] == "CrossAttnDownBlock2D" {
                down.append(CrossAttnDownBlock2D(inChannels: inCh, outChannels: channels[i], tembChannels: temb,
                                                 depths: c.downDepths(i), heads: heads[i], crossAttentionDim: cross[i],
                                                 groups: groups, eps: eps, useLinearProjection: c.useLinearProjection,
                                                 addDownsample: !last, init: p))
            } else {
                down.append(DownBlock2D(inChannels: inCh, outChannels: channels[i], tembChannels: temb, layers: layers[i],
                                        groups: groups, eps: eps, addDownsample: !last, init: p))
            }
        }
        downBlocks = down

        midBlock = c.midBlockType == nil ? nil
            : UNetMidBlock2DCrossAttn(channels: channels[n - 1], tembChannels: temb, depth: c.midDepth, heads: heads[n - 1],
                                      crossAttentionDim: cross[n - 1], groups: groups, eps: eps,
                                      outputScaleFactor: c.midBlockScaleFactor, useLinearProjection: c.useLinearProjection,
                                      init: p)

        var up: [any UNetUpBlock] = []
        let rChannels = Array(channels.reversed()), rHeads = Array(heads.reversed()), rCross = Array(cross.reversed())
        let rLayers = Array(layers.reversed())
        for i in 0..<n {
            let prev = i == 0 ? rChannels[0] : rChannels[i - 1]
            let inCh = rChannels[min(i + 1, n - 1)], last = i == n - 1
            if c.upBlockTypes[i] == "CrossAttnUpBlock2D" {
                up.append(CrossAttnUpBlock2D(inChannels: inCh, prevOutputChannels: prev, outChannels: rChannels[i],
                                             tembChannels: temb, depths: c.upDepths(i), heads: rHeads[i],
                                             crossAttentionDim: rCross[i], groups: groups, eps: eps,
                                             useLinearProjection: c.useLinearProjection, addUpsample: !last, init: p))
            } else {
                up.append(UpBlock2D(inChannels: inCh, prevOutputChannels: prev, outChannels: rChannels[i], tembChannels: temb,
                                    layers: rLayers[i] + 1, groups: groups, eps: eps, addUpsample: !last, init: p))
            }
        }
        upBlocks = up

        convNormOut = GroupNorm(groups: groups, channels: channels[0], eps: eps, init: p)
        convOut = Conv2d(channels[0], c.outChannels, kernelSize: c.convOutKernel, padding: (c.convOutKernel - 1) / 2, init: p)
    }

    /// In diffusers' registration order, so `namedParameters()` lists keys as
    /// `state_dict()` does.
    public var entries: [(String, ModuleEntry)] {
        var e: [(String, ModuleEntry)] = [("conv_in", .module(convIn)), ("time_embedding", .module(timeEmbedding))]
        if let addEmbedding { e.append(("add_embedding", .module(addEmbedding))) }
        e.append(("down_blocks", .list(downBlocks.map { $0 as any Module })))
        e.append(("up_blocks", .list(upBlocks.map { $0 as any Module })))
        if let midBlock { e.append(("mid_block", .module(midBlock))) }
        e.append(("conv_norm_out", .module(convNormOut)))
        e.append(("conv_out", .module(convOut)))
        return e
    }

    /// The predicted noise (or v), [B, out_channels, h, w].
    ///
    /// - Parameters:
    ///   - sample: noisy latents [B, in_channels, h, w]; h and w must be multiples of
    ///     2^(blocks - 1).
    ///   - timestep: one timestep per batch item, or one for all.
    ///   - encoderHiddenStates: text conditioning [B, S, cross_attention_dim].
    ///   - textEmbeds: pooled text embedding [B, P] (`text_time` only), where
    ///     P + 6 · addition_time_embed_dim = projection_class_embeddings_input_dim.
    ///   - timeIds: SDXL's `add_time_ids` [B, 6] (original size, crop top-left, target
    ///     size; `text_time` only). Constants: they get no gradient.
    ///   - recorder: keeps the intermediate features it names (distillation); a recorded
    ///     self-attention is not gradient-checkpointed.
    public func callAsFunction(sample: Tensor, timestep: [Float], encoderHiddenStates: Tensor,
                               textEmbeds: Tensor? = nil, timeIds: Tensor? = nil,
                               recorder: UNetFeatureRecorder? = nil) -> Tensor {
        let c = config
        precondition(sample.rank == 4 && sample.shape[1] == c.inChannels,
                     "UNet2DConditionModel: sample must be [B, \(c.inChannels), h, w], got \(sample.shape)")
        let b = sample.shape[0], factor = 1 << (c.blockCount - 1)
        precondition(sample.shape[2] % factor == 0 && sample.shape[3] % factor == 0,
                     "UNet2DConditionModel: latent size \(sample.shape[2])x\(sample.shape[3]) must be a multiple of \(factor)")
        precondition(timestep.count == b || timestep.count == 1,
                     "UNet2DConditionModel: \(timestep.count) timesteps for batch \(b)")
        precondition(encoderHiddenStates.rank == 3 && encoderHiddenStates.shape[0] == b,
                     "UNet2DConditionModel: encoderHiddenStates must be [\(b), S, D], got \(encoderHiddenStates.shape)")

        var emb = timeEmbedding(timeProj(timestep.count == b ? timestep : Array(repeating: timestep[0], count: b)))
        if let addTimeProj, let addEmbedding {
            guard let textEmbeds, let timeIds else {
                preconditionFailure("UNet2DConditionModel: addition_embed_type text_time needs textEmbeds and timeIds")
            }
            precondition(textEmbeds.rank == 2 && textEmbeds.shape[0] == b && timeIds.rank == 2 && timeIds.shape[0] == b,
                         "UNet2DConditionModel: textEmbeds \(textEmbeds.shape) and timeIds \(timeIds.shape) must be [\(b), …]")
            let timeEmbeds = addTimeProj(timeIds.contiguous().toArray()).reshape([b, -1])
            precondition(textEmbeds.shape[1] + timeEmbeds.shape[1] == c.projectionClassEmbeddingsInputDim!,
                         "UNet2DConditionModel: textEmbeds width \(textEmbeds.shape[1]) + timeIds features \(timeEmbeds.shape[1]) != projection_class_embeddings_input_dim \(c.projectionClassEmbeddingsInputDim!)")
            emb = emb + addEmbedding(Tensor.cat([textEmbeds, timeEmbeds], dim: 1))
        }
        let ctx = UNetBlockContext(tembActivated: emb.silu(), encoderHiddenStates: encoderHiddenStates,
                                   checkpointing: gradientCheckpointing, features: recorder?.root)

        var h = convIn(c.centerInputSample ? sample * 2 - 1 : sample)
        var skips = [h]
        for (i, block) in downBlocks.enumerated() {
            let (out, states) = block(h, ctx.within("down_blocks.\(i)"))
            h = out
            skips += states
            ctx.features?.record("down_blocks.\(i)", h)
        }
        if let midBlock {
            h = midBlock(h, ctx.within("mid_block"))
            ctx.features?.record("mid_block", h)
        }
        for (i, block) in upBlocks.enumerated() {
            h = block(h, skips: &skips, ctx.within("up_blocks.\(i)"))
            ctx.features?.record("up_blocks.\(i)", h)
        }
        precondition(skips.isEmpty, "UNet2DConditionModel: \(skips.count) skip states left unused")
        return convOut(convNormOut.silu(h))
    }
}
