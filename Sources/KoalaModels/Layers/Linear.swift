import KoalaTensor

/// `torch.nn.Linear`: weight [out, in], optional bias [out].
public final class Linear: Module {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, generator: inout RandomGenerator) {
        // PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = .uniform([outFeatures, inFeatures], bound: bound, generator: &generator)
        self.bias = bias ? .uniform([outFeatures], bound: bound, generator: &generator) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        [("weight", .parameter(weight))] + (bias.map { [("bias", .parameter($0))] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.linear(weight, bias) }
}

extension Tensor {
    /// U(-bound, bound), the initialiser PyTorch layers use by default.
    public static func uniform(_ shape: [Int], bound: Float, generator: inout RandomGenerator) -> Tensor {
        let t = Tensor(empty: shape)
        for i in 0..<t.count { t.data[i] = (generator.uniform() * 2 - 1) * bound }
        return t
    }
}
