import Foundation
import KoalaModels
import KoalaTensor
import KoalaTraining

/// The optimizer step of the full fine-tune alone: one bitsandbytes-style 8-bit Adam
/// step over KOALA-700M's 782.8M parameters, in the U-Net's own tensor sizes (the 1.9%
/// of tensors under 4096 values keep float32 moments, as bitsandbytes does). About 8 GB:
/// parameters and gradients in float32 plus two bytes of state per parameter.
enum OptimizerBench {
    static var cases: [BenchCase] {
        [
            // The warm-up step allocates and first-touches the 1.6 GB of states; the
            // timed steps are the steady state of a training run.
            BenchCase(name: "adam8bit-step koala-700m", flops: nil, group: "optimizer", minTime: 20, maxRuns: 5,
                      isolated: true) {
                let m = UNet2DConditionModel(config: .koala700M, init: .uninitialized())
                ModelBench.fillPlaceholderWeights(m)
                let params = m.namedParameters().map(\.1)
                precondition(params.reduce(0) { $0 + $1.count } == 782_822_724, "KOALA-700M config drifted")
                for (k, p) in params.enumerated() { p.grad = placeholderGradient(like: p, salt: k) }
                let optimizer = Adam8bit(learningRate: 5e-5)
                return { optimizer.step(params) }
            },
        ]
    }

    /// A gradient-sized hash pattern (about ±1e-3, no zero blocks) of `p`'s shape.
    static func placeholderGradient(like p: Tensor, salt: Int) -> Tensor {
        let g = Tensor(empty: p.shape), ptr = g.data
        let s = UInt32(truncatingIfNeeded: salt &* 0x27D4_EB2F)
        Parallel.forEach(p.count, grain: 1 << 16) { range in
            for i in range {
                var x = UInt32(truncatingIfNeeded: i) &* 0x9E37_79B9 ^ s
                x ^= x >> 15; x = x &* 0x2C1B_3C6D; x ^= x >> 12
                ptr[i] = (Float(x >> 8) * (2 / 16_777_216) - 1) * 1e-3
            }
        }
        return g
    }
}
