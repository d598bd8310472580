import KoalaTensor

/// diffusers' `Downsample2D` with a convolution: a 3x3 convolution with stride 2 and
/// `padding` 1 (the U-Net), or with `padding` 0 (the VAE encoder), which diffusers
/// does by zero-padding one row at the bottom and one column at the right first.
public final class Downsample2D: Module {
    public let conv: Conv2d
    public let padding: Int

    public init(channels: Int, padding: Int = 1, init p: ParameterInitializer) {
        precondition(padding == 0 || padding == 1, "Downsample2D: padding \(padding) is not one diffusers' models use")
        conv = Conv2d(channels, channels, kernelSize: 3, stride: 2, padding: padding, init: p)
        self.padding = padding
    }

    public var entries: [(String, ModuleEntry)] { [("conv", .module(conv))] }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard padding == 0 else { return conv(x) }
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let right = Tensor.cat([x, Tensor.zeros([b, c, h, 1])], dim: 3)
        return conv(Tensor.cat([right, Tensor.zeros([b, c, 1, w + 1])], dim: 2))
    }
}
