import Foundation
import KoalaTensor

/// An exponential moving average of the trained parameters, as diffusers' `EMAModel`
/// (training_utils.py) computes it: after every `update`, each shadow parameter moves
/// `1 - decay` of the way to its parameter, with a decay that grows with the number of
/// updates. Frozen parameters (`requiresGrad == false`) are copied, not averaged, as
/// diffusers does.
///
/// The decay at update n (counted from 1): with `k = max(0, n - updateAfterStep - 1)`,
/// 0 while k = 0, else `(1 + k) / (10 + k)`, or `1 - (1 + k / invGamma)^-power` with
/// `useEMAWarmup`; then clamped to `[minDecay, decay]`.
public final class EMAModel {
    public let decay: Double
    public let minDecay: Double
    public let updateAfterStep: Int
    public let useEMAWarmup: Bool
    public let invGamma: Double
    public let power: Double
    /// Updates made so far (diffusers' `optimization_step`).
    public private(set) var optimizationStep = 0
    /// The averaged parameters, one per parameter position.
    public private(set) var shadow: [Tensor]

    public init(parameters: [Tensor], decay: Double = 0.9999, minDecay: Double = 0, updateAfterStep: Int = 0,
                useEMAWarmup: Bool = false, invGamma: Double = 1, power: Double = 2.0 / 3.0) {
        precondition((0...1).contains(decay) && (0...decay).contains(minDecay), "EMA decay \(decay), min \(minDecay)")
        self.decay = decay
        self.minDecay = minDecay
        self.updateAfterStep = updateAfterStep
        self.useEMAWarmup = useEMAWarmup
        self.invGamma = invGamma
        self.power = power
        shadow = parameters.map { $0.contiguous().copy() }
    }

    /// The decay the update numbered `step` uses.
    public func decay(atStep step: Int) -> Double {
        let k = max(0, step - updateAfterStep - 1)
        if k == 0 { return 0 }
        let d = useEMAWarmup ? 1 - pow(1 + Double(k) / invGamma, -power) : Double(1 + k) / Double(10 + k)
        return max(min(d, decay), minDecay)
    }

    /// One update from the current parameters (same tensors, same order as at init).
    public func update(_ parameters: [Tensor]) {
        precondition(parameters.count == shadow.count, "EMA of \(shadow.count) parameters updated with \(parameters.count)")
        optimizationStep += 1
        // float32 like torch: `s -= float(1 - decay) * (s - p)`, one rounding per operation.
        let oneMinus = Float(1 - decay(atStep: optimizationStep))
        for (s, p) in zip(shadow, parameters) {
            precondition(s.shape == p.shape, "EMA parameter \(s.shape) updated with \(p.shape)")
            let pc = p.contiguous()
            withExtendedLifetime(pc) {
                let ps = s.data, pp = pc.data
                if p.requiresGrad {
                    for i in 0..<s.count { ps[i] = ps[i] - oneMinus * (ps[i] - pp[i]) }
                } else {
                    ps.update(from: pp, count: s.count)
                }
            }
        }
    }

    /// Writes the averaged values into `parameters` (diffusers' `copy_to`), e.g. before a
    /// validation or an export that should use the EMA weights.
    public func copy(to parameters: [Tensor]) {
        precondition(parameters.count == shadow.count, "EMA of \(shadow.count) parameters copied to \(parameters.count)")
        for (s, p) in zip(shadow, parameters) {
            precondition(p.isContiguous && s.shape == p.shape, "EMA copy to a \(p.shape) parameter")
            p.data.update(from: s.data, count: s.count)
        }
    }

    /// Runs `body` with the averaged values in `parameters` and puts their own values back
    /// afterwards (diffusers' `store`, `copy_to`, `restore`).
    public func withAveragedWeights<T>(in parameters: [Tensor], _ body: () throws -> T) rethrows -> T {
        let stored = parameters.map { $0.contiguous().copy() }
        copy(to: parameters)
        defer { for (p, s) in zip(parameters, stored) { p.data.update(from: s.data, count: s.count) } }
        return try body()
    }

    /// Everything a resume needs: the settings and update count as metadata, the shadow
    /// parameters as `shadow.N`.
    public func stateDict() -> OptimizerState {
        var tensors: [String: Tensor] = [:]
        for (i, s) in shadow.enumerated() { tensors["shadow.\(i)"] = s }
        return OptimizerState(tensors: tensors, metadata: [
            "ema": "EMAModel", "param_count": String(shadow.count), "optimization_step": String(optimizationStep),
            "decay": "\(decay)", "min_decay": "\(minDecay)", "update_after_step": String(updateAfterStep),
            "use_ema_warmup": String(useEMAWarmup), "inv_gamma": "\(invGamma)", "power": "\(power)",
        ])
    }

    /// Restores `stateDict()` of an EMA over the same parameters and settings.
    public func load(stateDict st: OptimizerState) throws {
        guard st.metadata["ema"] == "EMAModel" else { throw OptimizerStateError("the file holds no EMA state") }
        let count = try st.int("param_count")
        guard count == shadow.count else {
            throw OptimizerStateError("the EMA state holds \(count) tensors, but this run trains \(shadow.count) parameters; it belongs to another run")
        }
        let saved = (try st.double("decay"), try st.double("min_decay"), try st.int("update_after_step"), try st.string("use_ema_warmup"),
                     try st.double("inv_gamma"), try st.double("power"))
        guard saved == (decay, minDecay, updateAfterStep, String(useEMAWarmup), invGamma, power) else {
            throw OptimizerStateError("EMA state was written with other [ema] settings than this run's")
        }
        let values = try shadow.indices.map { i in try st.tensor("shadow.\(i)", count: shadow[i].count) }
        withExtendedLifetime(values) {
            for (s, v) in zip(shadow, values) { s.data.update(from: v.data, count: s.count) }
        }
        optimizationStep = try st.int("optimization_step")
    }
}
