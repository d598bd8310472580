import KoalaTensor

/// The U-Net's most common convolution at 1024 px (320 channels, 128x128 latent),
/// as `conv` in tools/bench/torch_ops.py.
enum ConvBench {
    static func randn(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = RandomGenerator(seed: seed)
        return Tensor.randn(shape, generator: &rng)
    }

    static var cases: [BenchCase] {
        let flops = 2.0 * 320 * 320 * 9 * 128 * 128
        return [
            BenchCase(name: "conv2d 3x3 320ch 128x128 forward", flops: flops) {
                let x = randn([1, 320, 128, 128], seed: 1)
                let w = randn([320, 320, 3, 3], seed: 2), b = Tensor.zeros([320])
                return { _ = noGrad { x.conv2d(w, b, padding: 1) } }
            },
            // Forward and backward together, with gradients of input, weight and bias.
            BenchCase(name: "conv2d 3x3 320ch 128x128 backward", flops: 3 * flops) {
                let x = randn([1, 320, 128, 128], seed: 1)
                let w = randn([320, 320, 3, 3], seed: 2), b = Tensor.zeros([320])
                let g = randn([1, 320, 128, 128], seed: 3)
                return {
                    for t in [x, w, b] { t.requiresGrad = true; t.grad = nil }
                    x.conv2d(w, b, padding: 1).backward(g)
                }
            },
        ]
    }
}
