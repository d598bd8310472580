/// Gradient accumulation over `microBatches` micro-batches.
///
/// Procedure, giving the update of one batch `microBatches` times larger (for equal
/// micro-batch sizes and a mean-reduced loss):
/// 1. for each micro-batch: `(loss * accumulator.lossScale).backward()` — gradients
///    add up in each parameter's `.grad`;
/// 2. when `accumulator.microBatchDone()` returns true: clip (optional),
///    `optimizer.step(params)`, `optimizer.zeroGrad(params)`, advance the schedule.
///
/// Scaling each micro-batch loss by `1/N` makes the summed gradient the gradient of the
/// mean over all N micro-batches, i.e. of the large batch's mean loss.
public struct GradientAccumulator: Sendable, Equatable {
    public let microBatches: Int
    /// Micro-batches accumulated since the last optimizer step.
    public private(set) var pending = 0

    public init(microBatches: Int) {
        precondition(microBatches >= 1, "gradient accumulation needs at least 1 micro-batch, got \(microBatches)")
        self.microBatches = microBatches
    }

    /// The factor each micro-batch loss is multiplied by before `backward()`.
    public var lossScale: Float { 1 / Float(microBatches) }

    /// Records one finished micro-batch; true when the optimizer should step now.
    public mutating func microBatchDone() -> Bool {
        pending += 1
        if pending == microBatches {
            pending = 0
            return true
        }
        return false
    }
}
