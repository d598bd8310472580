import KoalaTensor

/// diffusers' `Timesteps`: sinusoidal features of scalar conditions (diffusion
/// timesteps, SDXL's size and crop values). No parameters.
public struct Timesteps: Sendable {
    public let dim: Int
    public let flipSinToCos: Bool
    public let downscaleFreqShift: Float

    public init(dim: Int, flipSinToCos: Bool, downscaleFreqShift: Float) {
        self.dim = dim
        self.flipSinToCos = flipSinToCos
        self.downscaleFreqShift = downscaleFreqShift
    }

    /// [values.count, dim].
    public func callAsFunction(_ values: [Float]) -> Tensor {
        Tensor.timestepEmbedding(values, dim: dim, flipSinToCos: flipSinToCos, downscaleFreqShift: downscaleFreqShift)
    }
}

/// diffusers' `TimestepEmbedding` (default arguments): `linear_2(silu(linear_1(x)))`.
public final class TimestepEmbedding: Module {
    public let linear1, linear2: Linear

    public init(inChannels: Int, timeEmbedDim: Int, init p: ParameterInitializer) {
        linear1 = Linear(inChannels, timeEmbedDim, init: p)
        linear2 = Linear(timeEmbedDim, timeEmbedDim, init: p)
    }

    public var entries: [(String, ModuleEntry)] { [("linear_1", .module(linear1)), ("linear_2", .module(linear2))] }

    public func callAsFunction(_ x: Tensor) -> Tensor { linear2(linear1(x).silu()) }
}
