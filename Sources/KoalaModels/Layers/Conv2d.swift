import KoalaTensor

/// `torch.nn.Conv2d` (groups 1): weight [out, in, k, k], optional bias [out].
public final class Conv2d: Module {
    public let weight: Tensor
    public let bias: Tensor?
    public let stride: Int, padding: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                bias: Bool = true, init p: ParameterInitializer) {
        let bound = 1 / Float(inChannels * kernelSize * kernelSize).squareRoot()
        weight = p.uniform([outChannels, inChannels, kernelSize, kernelSize], bound: bound)
        self.bias = bias ? p.uniform([outChannels], bound: bound) : nil
        self.stride = stride
        self.padding = padding
    }

    public var entries: [(String, ModuleEntry)] {
        [("weight", .parameter(weight))] + (bias.map { [("bias", .parameter($0))] } ?? [])
    }

    /// A trainable side path (LoRA) whose output, computed from the layer's input, is
    /// added to the layer's output; nil for the plain layer. The base weights stay untouched.
    public var adapter: ((Tensor) -> Tensor)?

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = x.conv2d(weight, bias, stride: stride, padding: padding)
        guard let adapter else { return y }
        return y + adapter(x)
    }
}
