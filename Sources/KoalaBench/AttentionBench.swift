import KoalaTensor

/// Self-attention over a 64×64 feature map (KOALA's 640-channel stage at 1024 px):
/// 4096 tokens, 10 heads of 64. Same work as tools/bench/torch_ops.py `attention(...)`.
enum AttentionBench {
    static var cases: [BenchCase] {
        let (b, h, l, d) = (1, 10, 4096, 64)
        // Forward: Q Kᵀ and P V, 2 · L · S · D each. Backward recomputes Q Kᵀ and adds
        // four products of the same size (dV, dP, dQ, dK): 2.5× the forward. The
        // "backward" case times forward and backward together, so 3.5× the forward.
        let forwardFlops = 4 * Double(l * l * d * h * b)
        func inputs() -> [Tensor] {
            var rng = RandomGenerator(seed: 0)
            return (0..<3).map { _ in Tensor.randn([b, h, l, d], generator: &rng) }
        }
        return [
            BenchCase(name: "attention 4096 tok 10x64 forward", flops: forwardFlops) {
                let qkv = inputs()
                return { _ = noGrad { Tensor.scaledDotProductAttention(query: qkv[0], key: qkv[1], value: qkv[2]) } }
            },
            BenchCase(name: "attention 4096 tok 10x64 backward", flops: 3.5 * forwardFlops) {
                let qkv = inputs()
                var rng = RandomGenerator(seed: 1)
                let g = Tensor.randn([b, h, l, d], generator: &rng)
                return {
                    for t in qkv { t.requiresGrad = true; t.grad = nil }
                    Tensor.scaledDotProductAttention(query: qkv[0], key: qkv[1], value: qkv[2]).backward(g)
                }
            },
        ]
    }
}
