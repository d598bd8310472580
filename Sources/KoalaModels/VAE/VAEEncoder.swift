import KoalaTensor

/// diffusers' VAE `Encoder` (`double_z`): image [B, in, H, W] → moments
/// [B, 2·latent, H/f, W/f] (mean and log-variance stacked on the channels), with
/// f = 2^(blocks − 1).
public final class VAEEncoder: Module {
    public let convIn: Conv2d
    public let downBlocks: [DownEncoderBlock2D]
    public let midBlock: UNetMidBlock2D
    public let convNormOut: GroupNorm
    public let convOut: Conv2d

    public init(config c: AutoencoderKLConfig, init p: ParameterInitializer) {
        let channels = c.blockOutChannels, groups = c.normNumGroups
        convIn = Conv2d(c.inChannels, channels[0], kernelSize: 3, padding: 1, init: p)
        downBlocks = channels.indices.map { i in
            DownEncoderBlock2D(inChannels: channels[max(i - 1, 0)], outChannels: channels[i], layers: c.layersPerBlock,
                               groups: groups, addResampler: i < channels.count - 1, init: p)
        }
        midBlock = UNetMidBlock2D(channels: channels.last!, groups: groups, addAttention: c.midBlockAddAttention, init: p)
        convNormOut = GroupNorm(groups: groups, channels: channels.last!, eps: 1e-6, init: p)
        convOut = Conv2d(channels.last!, 2 * c.latentChannels, kernelSize: 3, padding: 1, init: p)
    }

    public var entries: [(String, ModuleEntry)] {
        [("conv_in", .module(convIn)), ("down_blocks", .list(downBlocks)), ("mid_block", .module(midBlock)),
         ("conv_norm_out", .module(convNormOut)), ("conv_out", .module(convOut))]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = convIn(x)
        for block in downBlocks { h = block(h) }
        h = midBlock(h)
        return convOut(convNormOut.silu(h))
    }
}
