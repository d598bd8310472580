import KoalaTensor

/// diffusers' `ResnetBlock2D` as the SDXL U-Net configures it (pre-norm, SiLU,
/// `time_embedding_norm` "default", no up/down sampling inside):
/// `(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb)))))) / scale`.
public final class ResnetBlock2D: Module {
    public let norm1: GroupNorm
    public let conv1: Conv2d
    public let timeEmbProj: Linear
    public let norm2: GroupNorm
    public let conv2: Conv2d
    /// A 1x1 convolution when the channel count changes.
    public let convShortcut: Conv2d?
    public let outputScaleFactor: Float

    public init(inChannels: Int, outChannels: Int, tembChannels: Int, groups: Int, eps: Float,
                outputScaleFactor: Float = 1, init p: ParameterInitializer) {
        norm1 = GroupNorm(groups: groups, channels: inChannels, eps: eps, init: p)
        conv1 = Conv2d(inChannels, outChannels, kernelSize: 3, padding: 1, init: p)
        timeEmbProj = Linear(tembChannels, outChannels, init: p)
        norm2 = GroupNorm(groups: groups, channels: outChannels, eps: eps, init: p)
        conv2 = Conv2d(outChannels, outChannels, kernelSize: 3, padding: 1, init: p)
        convShortcut = inChannels != outChannels ? Conv2d(inChannels, outChannels, kernelSize: 1, init: p) : nil
        self.outputScaleFactor = outputScaleFactor
    }

    public var entries: [(String, ModuleEntry)] {
        [("norm1", .module(norm1)), ("conv1", .module(conv1)), ("time_emb_proj", .module(timeEmbProj)),
         ("norm2", .module(norm2)), ("conv2", .module(conv2))]
            + (convShortcut.map { [("conv_shortcut", .module($0))] } ?? [])
    }

    /// - Parameters:
    ///   - x: [B, in, H, W].
    ///   - tembActivated: `silu(temb)`, [B, temb]: every resnet applies SiLU to the same
    ///     time embedding, so the U-Net computes it once.
    /// - Returns: [B, out, H, W].
    public func callAsFunction(_ x: Tensor, _ tembActivated: Tensor) -> Tensor {
        let t = timeEmbProj(tembActivated)
        let h = conv1(norm1.silu(x)) + t.reshape([t.shape[0], t.shape[1], 1, 1])
        let out = (convShortcut.map { $0(x) } ?? x) + conv2(norm2.silu(h))
        return outputScaleFactor == 1 ? out : out / outputScaleFactor
    }
}
