import KoalaTensor

/// `torch.nn.GroupNorm` with affine weight and bias (initialised to 1 and 0).
public final class GroupNorm: Module {
    public let groups: Int
    public let eps: Float
    public let weight: Tensor, bias: Tensor

    public init(groups: Int, channels: Int, eps: Float = 1e-5, init p: ParameterInitializer) {
        precondition(channels % groups == 0, "GroupNorm: \(channels) channels do not split into \(groups) groups")
        self.groups = groups
        self.eps = eps
        weight = p.constant([channels], 1)
        bias = p.constant([channels], 0)
    }

    public var entries: [(String, ModuleEntry)] { [("weight", .parameter(weight)), ("bias", .parameter(bias))] }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.groupNorm(groups: groups, weight: weight, bias: bias, eps: eps) }

    /// GroupNorm followed by SiLU in one fused pass (every resnet does this).
    public func silu(_ x: Tensor) -> Tensor { x.groupNormSiLU(groups: groups, weight: weight, bias: bias, eps: eps) }
}

/// `torch.nn.LayerNorm` over the last dimension.
public final class LayerNorm: Module {
    public let eps: Float
    public let weight: Tensor, bias: Tensor

    public init(_ dim: Int, eps: Float = 1e-5, init p: ParameterInitializer) {
        self.eps = eps
        weight = p.constant([dim], 1)
        bias = p.constant([dim], 0)
    }

    public var entries: [(String, ModuleEntry)] { [("weight", .parameter(weight)), ("bias", .parameter(bias))] }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.layerNorm(weight: weight, bias: bias, eps: eps) }
}
