import Foundation

extension Tensor {
    /// Inverted dropout, as `torch.nn.functional.dropout`: in training, zeroes each
    /// element with probability `p` and scales the rest by `1 / (1 - p)`; returns
    /// `self` unchanged when not training or when `p == 0`. The mask is drawn from
    /// `generator` (one uniform per element, row-major), and backward applies the same
    /// mask, so a generator snapshot replays the same dropout (checkpointing).
    public func dropout(p: Float, training: Bool, generator: inout RandomGenerator) -> Tensor {
        boundaryCheck(p >= 0 && p <= 1, "dropout probability must be in [0, 1], got \(p)")
        if !training || p == 0 { return self }
        let keepScale: Float = p == 1 ? 0 : 1 / (1 - p)
        let mask = Tensor(empty: shape)
        let m = mask.data
        for i in 0..<count { m[i] = generator.uniform() >= p ? keepScale : 0 }
        let out = noGrad { self * mask }
        return record(out, [self], "dropout") { g, _ in [g * mask] }
    }
}
