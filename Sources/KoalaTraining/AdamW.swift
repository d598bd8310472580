import Foundation
import KoalaTensor

/// Float32 Adam / AdamW, numerically as `torch.optim.AdamW` / `torch.optim.Adam`
/// (single-tensor CPU path) compute it.
///
/// One step, for step count t:
/// - AdamW: `p *= 1 - lr·wd`; Adam: `g += wd·p` (L2 folded into the gradient)
/// - `m = lerp(m, g, 1 - β1)`, `v = β2·v + (1 - β2)·g²`
/// - `p -= lr/(1 - β1^t) · m / (sqrt(v)/sqrt(1 - β2^t) + eps)` (eps outside the sqrt)
///
/// Scalars are computed in Double and rounded to float32 as PyTorch does; each
/// element operation rounds where PyTorch's CPU kernels round (fused multiply-adds
/// in `lerp`, `add(alpha:)` and `addcmul`). PyTorch's CPU `sqrt` (MKL) is not always
/// correctly rounded, so parameters agree to about one float32 ulp per step.
public final class AdamW: AdamFamily {
    public var learningRate: Double
    let hyperparameters: AdamHyperparameters
    /// true: AdamW (decoupled decay, `p *= 1 - lr·wd`); false: Adam with L2 in the gradient.
    public let decoupledWeightDecay: Bool

    var states: [AdamMoments?] = []

    /// AdamW with PyTorch's defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01).
    public init(learningRate: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                weightDecay: Double = 0.01, decoupledWeightDecay: Bool = true) {
        hyperparameters = AdamHyperparameters(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay)
        self.learningRate = learningRate
        self.decoupledWeightDecay = decoupledWeightDecay
    }

    /// `torch.optim.Adam` (weight decay added to the gradient; default 0).
    public static func adam(learningRate: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                            weightDecay: Double = 0) -> AdamW {
        AdamW(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay, decoupledWeightDecay: false)
    }

    var kindName: String { decoupledWeightDecay ? "adamw" : "adam" }

    public func step(_ params: [Tensor]) {
        if states.count < params.count { states += [AdamMoments?](repeating: nil, count: params.count - states.count) }
        for (i, p) in params.enumerated() {
            guard let g = p.optimizerGrad() else { continue }
            let s = states[i] ?? AdamMoments(count: p.count)
            precondition(s.expAvg.count == p.count, "parameter \(i) changed size from \(s.expAvg.count) to \(p.count)")
            states[i] = s
            s.step += 1
            update(p, g, s)
        }
    }

    private func update(_ p: Tensor, _ g: Tensor, _ s: AdamMoments) {
        let t = Double(s.step), lr = learningRate
        let decay = Float(1 - lr * weightDecay), l2 = Float(weightDecay)
        let decoupled = decoupledWeightDecay, hasDecay = weightDecay != 0
        let w1 = Float(1 - beta1), b2 = Float(beta2), c2 = Float(1 - beta2)
        let biasCorrection2Sqrt = Float((1 - pow(beta2, t)).squareRoot())
        let negStepSize = Float(-(lr / (1 - pow(beta1, t))))
        let epsF = Float(eps)
        let pd = p.data, gd = g.data, n = p.count
        s.withBuffers { m, v in
            Parallel.forEach(n, grain: 16384) { range in
                for i in range {
                    var gi = gd[i]
                    if hasDecay {
                        if decoupled { pd[i] = pd[i] * decay } else { gi = gi.addingProduct(l2, pd[i]) }
                    }
                    let mi = m[i].addingProduct(w1, gi - m[i])
                    let vi = (v[i] * b2).addingProduct(c2 * gi, gi)
                    m[i] = mi
                    v[i] = vi
                    let denom = vi.squareRoot() / biasCorrection2Sqrt + epsF
                    pd[i] = pd[i] + (negStepSize * mi) / denom
                }
            }
        }
    }

    public func stateDict() -> OptimizerState {
        var st = OptimizerState()
        st.metadata = stateMetadata(kind: kindName, parameterCount: states.count)
        for (i, s) in states.enumerated() { s?.save(into: &st, index: i) }
        return st
    }

    public func load(stateDict st: OptimizerState) throws {
        let count = try st.checkKind(kindName)
        var loaded = [AdamMoments?](repeating: nil, count: count)
        for i in 0..<count where st.metadata["param.\(i).step"] != nil {
            loaded[i] = try AdamMoments.load(st, index: i, count: st.tensors["param.\(i).exp_avg"]?.count ?? 0)
        }
        learningRate = try st.double("lr")
        states = loaded
    }
}
