import Foundation

/// How a loss combines per-element terms, as PyTorch's `reduction` argument.
public enum LossReduction: Sendable {
    /// Per-element losses, shaped like the input.
    case none
    /// Mean over all elements (a scalar tensor).
    case mean
    /// Sum over all elements (a scalar tensor).
    case sum
}

extension Tensor {
    /// Squared error `(self - target)²` reduced as `reduction`, as
    /// `torch.nn.functional.mse_loss`. Shapes must be equal. Gradients flow to both.
    public func mseLoss(_ target: Tensor, reduction: LossReduction = .mean) -> Tensor {
        boundaryCheck(shape == target.shape, "mseLoss: input \(shape) and target \(target.shape) differ")
        let x = contiguous(), t = target.contiguous()
        let n = count
        let xp = UnsafePointer(x.data), tp = UnsafePointer(t.data)
        let out: Tensor
        switch reduction {
        case .none:
            out = Tensor.zipChunks(x, t) { a, b, d, m in for i in 0..<m { let e = a[i] - b[i]; d[i] = e * e } }
        case .mean, .sum:
            let total = blockedReduce(n) { r in
                var acc = SIMD16<Float>(repeating: 0)
                var i = r.lowerBound
                while i + 16 <= r.upperBound {
                    let e = UnsafeRawPointer(xp + i).loadUnaligned(as: SIMD16<Float>.self)
                        - UnsafeRawPointer(tp + i).loadUnaligned(as: SIMD16<Float>.self)
                    acc += e * e
                    i += 16
                }
                var s = 0.0
                for l in 0..<16 { s += Double(acc[l]) }
                while i < r.upperBound { let e = Double(xp[i] - tp[i]); s += e * e; i += 1 }
                return s
            }
            out = Tensor.scalar(Float(reduction == .mean ? total / Double(n) : total))
        }
        return record(out, [x, t], "mse_loss") { g, needs in
            // d/dx = 2(x - t)·g (· 1/n for mean); d/dt is its negation.
            let gx: Tensor
            if reduction == .none {
                let d = Tensor.zipChunks(x, t) { a, b, d, m in for i in 0..<m { d[i] = 2 * (a[i] - b[i]) } }
                gx = d * g
            } else {
                let k = 2 * g.item / (reduction == .mean ? Float(n) : 1)
                gx = Tensor.zipChunks(x, t) { a, b, d, m in for i in 0..<m { d[i] = k * (a[i] - b[i]) } }
            }
            return [needs[0] ? gx : nil, needs[1] ? -gx : nil]
        }
    }
}
