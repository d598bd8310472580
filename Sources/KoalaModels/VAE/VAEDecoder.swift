import KoalaTensor

/// diffusers' VAE `Decoder` (group norm): latents [B, latent, h, w] → image
/// [B, out, h·f, w·f], f = 2^(blocks − 1). Up blocks run from the widest channel count
/// down and hold `layers_per_block + 1` resnets each.
public final class VAEDecoder: Module {
    public let convIn: Conv2d
    public let midBlock: UNetMidBlock2D
    public let upBlocks: [UpDecoderBlock2D]
    public let convNormOut: GroupNorm
    public let convOut: Conv2d

    public init(config c: AutoencoderKLConfig, init p: ParameterInitializer) {
        let reversed = Array(c.blockOutChannels.reversed()), groups = c.normNumGroups
        convIn = Conv2d(c.latentChannels, reversed[0], kernelSize: 3, padding: 1, init: p)
        midBlock = UNetMidBlock2D(channels: reversed[0], groups: groups, addAttention: c.midBlockAddAttention, init: p)
        upBlocks = reversed.indices.map { i in
            UpDecoderBlock2D(inChannels: reversed[max(i - 1, 0)], outChannels: reversed[i], layers: c.layersPerBlock + 1,
                             groups: groups, addResampler: i < reversed.count - 1, init: p)
        }
        convNormOut = GroupNorm(groups: groups, channels: c.blockOutChannels[0], eps: 1e-6, init: p)
        convOut = Conv2d(c.blockOutChannels[0], c.outChannels, kernelSize: 3, padding: 1, init: p)
    }

    public var entries: [(String, ModuleEntry)] {
        [("conv_in", .module(convIn)), ("up_blocks", .list(upBlocks)), ("mid_block", .module(midBlock)),
         ("conv_norm_out", .module(convNormOut)), ("conv_out", .module(convOut))]
    }

    public func callAsFunction(_ z: Tensor) -> Tensor {
        var h = convIn(z)
        h = midBlock(h)
        for block in upBlocks { h = block(h) }
        return convOut(convNormOut.silu(h))
    }
}
