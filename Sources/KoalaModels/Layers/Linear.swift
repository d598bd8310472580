import KoalaTensor

/// `torch.nn.Linear`: weight [out, in], optional bias [out].
public final class Linear: Module {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, init p: ParameterInitializer) {
        // PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = p.uniform([outFeatures, inFeatures], bound: bound)
        self.bias = bias ? p.uniform([outFeatures], bound: bound) : nil
    }

    public var entries: [(String, ModuleEntry)] {
        [("weight", .parameter(weight))] + (bias.map { [("bias", .parameter($0))] } ?? [])
    }

    /// A trainable side path (LoRA) whose output, computed from the layer's input, is
    /// added to the layer's output; nil for the plain layer. The base weights stay untouched.
    public var adapter: ((Tensor) -> Tensor)?

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = x.linear(weight, bias)
        guard let adapter else { return y }
        return y + adapter(x)
    }
}
