import KoalaTensor

/// `torch.nn.Embedding`: a [count, dim] table looked up by integer ids.
public final class Embedding: Module {
    public let weight: Tensor

    public init(_ count: Int, _ dim: Int, std: Float = 1, init p: ParameterInitializer) {
        weight = p.normal([count, dim], std: std)
    }

    public var entries: [(String, ModuleEntry)] { [("weight", .parameter(weight))] }

    /// Rows for `ids` laid out as `shape` (shape.product == ids.count), giving shape + [dim].
    public func callAsFunction(_ ids: [Int], shape: [Int]) -> Tensor {
        Tensor.embedding(ids, weight: weight).reshape(shape + [weight.shape[1]])
    }
}
