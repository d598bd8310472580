import KoalaTensor

/// Creates parameter tensors when a model is built: random (PyTorch's default
/// initialisers, seeded) for `model init`, or uninitialised when the values will be
/// loaded from a checkpoint or only the shapes matter (counting parameters of the
/// 2.5B-parameter SDXL preset touches no memory that way).
public final class ParameterInitializer {
    private var generator: RandomGenerator?

    /// Seeded random initialisation.
    public init(seed: UInt64) { generator = RandomGenerator(seed: seed) }

    /// No initialisation: parameters hold garbage until loaded.
    public static func uninitialized() -> ParameterInitializer { ParameterInitializer() }

    private init() { generator = nil }

    /// U(-bound, bound).
    public func uniform(_ shape: [Int], bound: Float) -> Tensor {
        let t = Tensor(empty: shape)
        guard var g = generator else { return t }
        for i in 0..<t.count { t.data[i] = (g.uniform() * 2 - 1) * bound }
        generator = g
        return t
    }

    /// N(0, std²).
    public func normal(_ shape: [Int], std: Float) -> Tensor {
        let t = Tensor(empty: shape)
        guard var g = generator else { return t }
        for i in 0..<t.count { t.data[i] = g.normal() * std }
        generator = g
        return t
    }

    public func constant(_ shape: [Int], _ value: Float) -> Tensor {
        guard generator != nil else { return Tensor(empty: shape) }
        return Tensor.full(shape, value)
    }
}
