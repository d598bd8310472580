import Foundation
import KoalaTensor

/// Float32 Adam moments of one parameter, as `AdamW` keeps them for every parameter and
/// `Adam8bit` for those too small to quantize; saved as `param.N.step`, `.exp_avg`,
/// `.exp_avg_sq`.
final class AdamMoments {
    var step = 0
    var expAvg: [Float], expAvgSq: [Float]

    init(count: Int) {
        expAvg = [Float](repeating: 0, count: count)
        expAvgSq = [Float](repeating: 0, count: count)
    }

    /// Both moment buffers, for a kernel that updates them in place.
    func withBuffers<R>(_ body: (_ expAvg: UnsafeMutablePointer<Float>, _ expAvgSq: UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        try expAvg.withUnsafeMutableBufferPointer { m in
            try expAvgSq.withUnsafeMutableBufferPointer { v in try body(m.baseAddress!, v.baseAddress!) }
        }
    }

    func save(into st: inout OptimizerState, index i: Int) {
        st.metadata["param.\(i).step"] = "\(step)"
        st.tensors["param.\(i).exp_avg"] = .copying(expAvg)
        st.tensors["param.\(i).exp_avg_sq"] = .copying(expAvgSq)
    }

    static func load(_ st: OptimizerState, index i: Int, count n: Int) throws -> AdamMoments {
        let m = AdamMoments(count: n)
        m.step = try st.int("param.\(i).step")
        m.expAvg = try st.tensor("param.\(i).exp_avg", count: n).toArray()
        m.expAvgSq = try st.tensor("param.\(i).exp_avg_sq", count: n).toArray()
        return m
    }
}

/// The hyperparameters `AdamW` and `Adam8bit` share, checked once (the learning rate
/// is the optimizer's own: a schedule sets it every step).
struct AdamHyperparameters {
    let beta1: Double, beta2: Double, eps: Double, weightDecay: Double

    init(learningRate: Double, betas: (Double, Double), eps: Double, weightDecay: Double) {
        precondition(learningRate >= 0 && eps >= 0 && weightDecay >= 0, "learning rate, eps and weight decay must be >= 0")
        precondition((0..<1).contains(betas.0) && (0..<1).contains(betas.1), "betas must lie in [0, 1)")
        (beta1, beta2) = betas
        (self.eps, self.weightDecay) = (eps, weightDecay)
    }
}

protocol AdamFamily: Optimizer {
    var hyperparameters: AdamHyperparameters { get }
}

extension AdamFamily {
    var beta1: Double { hyperparameters.beta1 }
    var beta2: Double { hyperparameters.beta2 }
    var eps: Double { hyperparameters.eps }
    var weightDecay: Double { hyperparameters.weightDecay }

    /// The state's header: the optimizer's kind, its parameter count and hyperparameters.
    func stateMetadata(kind: String, parameterCount: Int) -> [String: String] {
        ["optimizer": kind, "param_count": "\(parameterCount)", "lr": "\(learningRate)",
         "beta1": "\(beta1)", "beta2": "\(beta2)", "eps": "\(eps)", "weight_decay": "\(weightDecay)"]
    }
}
