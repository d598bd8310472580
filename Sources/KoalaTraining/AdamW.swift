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
public final class AdamW: Optimizer {
    public var learningRate: Double
    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double
    /// true: AdamW (decoupled decay, `p *= 1 - lr·wd`); false: Adam with L2 in the gradient.
    public let decoupledWeightDecay: Bool

    final class Moments {
        var step = 0
        var expAvg: [Float]
        var expAvgSq: [Float]
        init(count: Int) {
            expAvg = [Float](repeating: 0, count: count)
            expAvgSq = [Float](repeating: 0, count: count)
        }
    }
    var states: [Moments?] = []

    /// AdamW with PyTorch's defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01).
    public init(learningRate: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                weightDecay: Double = 0.01, decoupledWeightDecay: Bool = true) {
        precondition(learningRate >= 0 && eps >= 0 && weightDecay >= 0, "learning rate, eps and weight decay must be >= 0")
        precondition((0..<1).contains(betas.0) && (0..<1).contains(betas.1), "betas must lie in [0, 1)")
        self.learningRate = learningRate
        self.beta1 = betas.0
        self.beta2 = betas.1
        self.eps = eps
        self.weightDecay = weightDecay
        self.decoupledWeightDecay = decoupledWeightDecay
    }

    /// `torch.optim.Adam` (weight decay added to the gradient; default 0).
    public static func adam(learningRate: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                            weightDecay: Double = 0) -> AdamW {
        AdamW(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay, decoupledWeightDecay: false)
    }

    var kindName: String { decoupledWeightDecay ? "adamw" : "adam" }

    public func step(_ params: [Tensor]) {
        if states.count < params.count { states += [Moments?](repeating: nil, count: params.count - states.count) }
        for (i, p) in params.enumerated() {
            guard let g = p.optimizerGrad() else { continue }
            let s = states[i] ?? Moments(count: p.count)
            precondition(s.expAvg.count == p.count, "parameter \(i) changed size from \(s.expAvg.count) to \(p.count)")
            states[i] = s
            s.step += 1
            update(p, g, s)
        }
    }

    private func update(_ p: Tensor, _ g: Tensor, _ s: Moments) {
        let t = Double(s.step), lr = learningRate
        let decay = Float(1 - lr * weightDecay), l2 = Float(weightDecay)
        let decoupled = decoupledWeightDecay, hasDecay = weightDecay != 0
        let w1 = Float(1 - beta1), b2 = Float(beta2), c2 = Float(1 - beta2)
        let biasCorrection2Sqrt = Float((1 - pow(beta2, t)).squareRoot())
        let negStepSize = Float(-(lr / (1 - pow(beta1, t))))
        let epsF = Float(eps)
        let pd = p.data, gd = g.data, n = p.count
        s.expAvg.withUnsafeMutableBufferPointer { mb in
            s.expAvgSq.withUnsafeMutableBufferPointer { vb in
                let m = mb.baseAddress!, v = vb.baseAddress!
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
    }

    public func stateDict() -> OptimizerState {
        var st = OptimizerState()
        st.metadata = [
            "optimizer": kindName, "param_count": "\(states.count)", "lr": "\(learningRate)",
            "beta1": "\(beta1)", "beta2": "\(beta2)", "eps": "\(eps)", "weight_decay": "\(weightDecay)",
        ]
        for (i, s) in states.enumerated() {
            guard let s else { continue }
            st.metadata["param.\(i).step"] = "\(s.step)"
            st.tensors["param.\(i).exp_avg"] = .copying(s.expAvg)
            st.tensors["param.\(i).exp_avg_sq"] = .copying(s.expAvgSq)
        }
        return st
    }

    public func load(stateDict st: OptimizerState) throws {
        let count = try st.checkKind(kindName)
        var loaded = [Moments?](repeating: nil, count: count)
        for i in 0..<count {
            guard st.metadata["param.\(i).step"] != nil else { continue }
            let n = st.tensors["param.\(i).exp_avg"]?.count ?? 0
            let m = Moments(count: n)
            m.step = try st.int("param.\(i).step")
            m.expAvg = try st.tensor("param.\(i).exp_avg", count: n).toArray()
            m.expAvgSq = try st.tensor("param.\(i).exp_avg_sq", count: n).toArray()
            loaded[i] = m
        }
        learningRate = try st.double("lr")
        states = loaded
    }
}
