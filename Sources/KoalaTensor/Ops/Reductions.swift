import Foundation

/// Fixed-size blocks for full reductions: the result does not depend on the thread
/// count (each block is summed the same way, blocks are combined in order).
let reductionBlock = 8192

/// Sum of `n` contiguous floats: 16 float lanes inside a block, blocks in Double.
@inline(__always)
func blockSum(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
        i += 16
    }
    var total = 0.0
    for l in 0..<16 { total += Double(acc[l]) }
    while i < n { total += Double(p[i]); i += 1 }
    return total
}

/// Σ over `0..<n` of `term(range)`, evaluated per fixed block in parallel and
/// combined in block order (deterministic for any thread count).
func blockedReduce(_ n: Int, _ term: (Range<Int>) -> Double) -> Double {
    if n <= 0 { return 0 }
    let blocks = (n + reductionBlock - 1) / reductionBlock
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: blocks)
    defer { partial.deallocate() }
    Parallel.forEach(blocks, grain: 4) { r in
        for b in r { partial[b] = term(b * reductionBlock..<min(n, (b + 1) * reductionBlock)) }
    }
    var total = 0.0
    for b in 0..<blocks { total += partial[b] }
    return total
}

extension Tensor {
    /// Sum of all elements, as a scalar tensor (shape `[]`).
    public func sum() -> Tensor {
        let x = contiguous()
        let p = UnsafePointer(x.data)
        let s = blockedReduce(count) { r in blockSum(p + r.lowerBound, r.count) }
        let inShape = shape
        return record(Tensor.scalar(Float(s)), [x], "sum") { g, _ in [Tensor.full(inShape, g.item)] }
    }

    /// Mean of all elements, as a scalar tensor (shape `[]`).
    public func mean() -> Tensor {
        let x = contiguous()
        let p = UnsafePointer(x.data)
        let n = count
        let s = blockedReduce(n) { r in blockSum(p + r.lowerBound, r.count) }
        let inShape = shape
        return record(Tensor.scalar(Float(s / Double(n))), [x], "mean") { g, _ in
            [Tensor.full(inShape, g.item / Float(n))]
        }
    }

    /// Sum over one dimension (negative counts from the end), as `torch.sum(dim:keepdim:)`.
    public func sum(dim: Int, keepDim: Bool = false) -> Tensor {
        reduceDim(dim, keepDim: keepDim, scale: 1, name: "sum_dim")
    }

    /// Mean over one dimension (negative counts from the end), as `torch.mean(dim:keepdim:)`.
    public func mean(dim: Int, keepDim: Bool = false) -> Tensor {
        let d = normalize(dim)
        return reduceDim(d, keepDim: keepDim, scale: 1 / Float(shape[d]), name: "mean_dim")
    }

    private func reduceDim(_ dim: Int, keepDim: Bool, scale: Float, name: String) -> Tensor {
        let d = normalize(dim)
        let len = shape[d]
        let outer = shape[..<d].reduce(1, *), inner = shape[(d + 1)...].reduce(1, *)
        var kept = shape
        kept[d] = 1
        let x = contiguous()
        let out = Tensor(empty: keepDim ? kept : shape.enumerated().filter { $0.offset != d }.map(\.element))
        let src = UnsafePointer(x.data), dst = out.data
        if inner == 1 {
            // Each output is a contiguous row.
            Parallel.forEach(outer, grain: max(1, elementwiseGrain / max(len, 1))) { r in
                for o in r { dst[o] = Float(blockSum(src + o * len, len)) * scale }
            }
        } else {
            // Accumulate whole rows of `inner` values (vectorised over inner), split over
            // outer slices, or over columns when there are fewer slices than threads.
            let splitColumns = outer < Parallel.threads
            let work = splitColumns ? inner : outer
            let grain = splitColumns ? max(64, elementwiseGrain / max(len, 1)) : max(1, elementwiseGrain / max(len * inner, 1))
            Parallel.forEach(work, grain: grain) { r in
                let (oRange, cRange) = splitColumns ? (0..<outer, r) : (r, 0..<inner)
                let c0 = cRange.lowerBound, w = cRange.count
                for o in oRange {
                    let base = src + o * len * inner + c0, acc = dst + o * inner + c0
                    if len == 0 { acc.update(repeating: 0, count: w); continue }
                    acc.update(from: base, count: w)
                    for k in 1..<max(len, 1) {
                        let row = base + k * inner
                        for i in 0..<w { acc[i] += row[i] }
                    }
                    if scale != 1 { for i in 0..<w { acc[i] *= scale } }
                }
            }
        }
        let inShape = shape
        return record(out, [x], name) { g, _ in
            let gk = g.reshape(kept)
            let scaled = scale == 1 ? gk : gk * scale
            return [scaled.expand(inShape).contiguous()]
        }
    }
}
