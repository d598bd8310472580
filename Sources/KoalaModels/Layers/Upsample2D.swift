import KoalaTensor

/// diffusers' `Upsample2D` with a convolution: nearest-neighbour 2x, then a 3x3
/// convolution with padding 1 (the U-Net's and the VAE decoder's alike).
public final class Upsample2D: Module {
    public let conv: Conv2d

    public init(channels: Int, init p: ParameterInitializer) {
        conv = Conv2d(channels, channels, kernelSize: 3, padding: 1, init: p)
    }

    public var entries: [(String, ModuleEntry)] { [("conv", .module(conv))] }

    public func callAsFunction(_ x: Tensor) -> Tensor { conv(x.upsampleNearest2x()) }
}
