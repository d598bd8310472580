import Foundation

/// Learning-rate schedules as `diffusers.optimization.get_scheduler` defines them.
public enum LRScheduleKind: String, CaseIterable, Sendable {
    /// The base rate throughout.
    case constant
    /// Linear ramp from 0 over the warmup steps, then the base rate.
    case constantWithWarmup = "constant_with_warmup"
    /// Linear warmup, then linear decay to 0 at `totalSteps`.
    case linear
    /// Linear warmup, then half a cosine period down to 0 at `totalSteps`.
    case cosine
}

/// The rate for each optimizer step: `baseLearningRate · multiplier(step)`.
///
/// `step` counts the optimizer steps already taken (0 for the first update), the
/// value `LambdaLR` holds when `optimizer.step()` runs in a diffusers training loop.
public struct LRSchedule: Sendable, Equatable {
    public var kind: LRScheduleKind
    public var baseLearningRate: Double
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(kind: LRScheduleKind, baseLearningRate: Double, warmupSteps: Int = 0, totalSteps: Int = 0) {
        precondition(warmupSteps >= 0 && totalSteps >= 0, "warmup and total steps must be >= 0")
        self.kind = kind
        self.baseLearningRate = baseLearningRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    /// The factor applied to the base rate at optimizer step `step` (0-based).
    public func multiplier(atStep step: Int) -> Double {
        let s = Double(step), warmup = Double(warmupSteps), total = Double(totalSteps)
        switch kind {
        case .constant:
            return 1
        case .constantWithWarmup:
            return step < warmupSteps ? s / max(1, warmup) : 1
        case .linear:
            if step < warmupSteps { return s / max(1, warmup) }
            return max(0, (total - s) / max(1, total - warmup))
        case .cosine:
            if step < warmupSteps { return s / max(1, warmup) }
            let progress = (s - warmup) / max(1, total - warmup)
            // diffusers' get_scheduler keeps num_cycles = 0.5: half a period.
            return max(0, 0.5 * (1 + cos(Double.pi * 0.5 * 2 * progress)))
        }
    }

    /// The learning rate for optimizer step `step` (0-based).
    public func learningRate(atStep step: Int) -> Double {
        baseLearningRate * multiplier(atStep: step)
    }
}
