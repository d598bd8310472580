extension Tensor {
    /// The flat (row-major) index of the first NaN or infinity, or nil when every element
    /// is finite. Cheap enough to run on latents after every denoising step: `x * 0` is 0
    /// for finite values and NaN otherwise, so a chunk's sum says whether to look inside it.
    public func firstNonFiniteIndex() -> Int? {
        let t = contiguous()
        let p = t.data, n = t.count
        let chunk = 4096
        var start = 0
        while start < n {
            let end = min(start + chunk, n)
            var probe: Float = 0
            for i in start..<end { probe += p[i] * 0 }
            if !probe.isFinite {
                for i in start..<end where !p[i].isFinite { return i }
            }
            start = end
        }
        return nil
    }

    /// The first NaN or infinity and its flat index, for messages; nil when all are finite.
    public func firstNonFinite() -> (index: Int, value: Float)? {
        let t = contiguous()
        guard let i = t.firstNonFiniteIndex() else { return nil }
        return (i, t.data[i])
    }

    /// Whether every element is finite (no NaN, no infinity).
    public var isAllFinite: Bool { firstNonFiniteIndex() == nil }
}
