import Foundation
import KoalaTensor

/// Gradient clipping by global L2 norm, as `torch.nn.utils.clip_grad_norm_`.
public enum GradientClipping {
    /// Scales every gradient by `min(1, maxNorm / (totalNorm + 1e-6))`, where
    /// `totalNorm` is the L2 norm of all gradients together, and returns `totalNorm`
    /// (before clipping). Parameters without a gradient are ignored. The norm is
    /// accumulated in Double (PyTorch accumulates in float32; the two agree to float
    /// precision). A non-finite norm is returned as is and makes the gradients
    /// non-finite, as in PyTorch; callers that want to skip such steps check it.
    @discardableResult
    public static func clipGradNorm(_ params: [Tensor], maxNorm: Double) -> Double {
        precondition(maxNorm > 0, "clipGradNorm: maxNorm must be positive, got \(maxNorm)")
        let grads = params.compactMap { $0.grad }
        let total = globalNorm(grads)
        let coefficient = maxNorm / (total + 1e-6)
        // PyTorch multiplies by the clamped coefficient unconditionally; by 1 it is a no-op.
        if coefficient < 1 {
            let c = Float(coefficient)
            for g in grads {
                precondition(g.isContiguous, "clipGradNorm expects contiguous gradients")
                let d = g.data
                Parallel.forEach(g.count, grain: 65536) { r in for i in r { d[i] = d[i] * c } }
            }
        }
        return total
    }

    /// L2 norm of all values of `tensors` together, accumulated in Double.
    public static func globalNorm(_ tensors: [Tensor]) -> Double {
        var sum = 0.0
        for t in tensors {
            let c = t.contiguous(), d = c.data, n = c.count
            let chunks = max(1, min(Parallel.threads, n / 65536))
            var partial = [Double](repeating: 0, count: chunks)
            partial.withUnsafeMutableBufferPointer { pb in
                let p = pb.baseAddress!
                Parallel.forEach(chunks, grain: 1) { r in
                    for k in r {
                        var s = 0.0
                        for i in (n * k / chunks)..<(n * (k + 1) / chunks) { let x = Double(d[i]); s += x * x }
                        p[k] = s
                    }
                }
            }
            sum += partial.reduce(0, +)
        }
        return sum.squareRoot()
    }
}
