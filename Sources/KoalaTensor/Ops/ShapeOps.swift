import Foundation

/// Copies `rows` rows of `length` floats between buffers with different row strides.
private func copyRows(_ src: UnsafePointer<Float>, srcStride: Int, _ dst: UnsafeMutablePointer<Float>, dstStride: Int,
                      rows: Int, length: Int) {
    if length == 0 { return }
    Parallel.forEach(rows, grain: max(1, elementwiseGrain / length)) { r in
        for row in r { (dst + row * dstStride).update(from: src + row * srcStride, count: length) }
    }
}

extension Tensor {
    /// Concatenates tensors along `dim`, as `torch.cat`. All other dims must agree.
    public static func cat(_ tensors: [Tensor], dim: Int) -> Tensor {
        boundaryCheck(!tensors.isEmpty, "cat needs at least one tensor")
        let first = tensors[0]
        let d = first.normalize(dim)
        for t in tensors {
            boundaryCheck(t.rank == first.rank && (0..<t.rank).allSatisfy { $0 == d || t.shape[$0] == first.shape[$0] },
                          "cat along dim \(d): shapes \(tensors.map(\.shape)) differ outside that dim")
        }
        let sizes = tensors.map { $0.shape[d] }
        let total = sizes.reduce(0, +)
        var outShape = first.shape
        outShape[d] = total
        let outer = first.shape[..<d].reduce(1, *), inner = first.shape[(d + 1)...].reduce(1, *)
        let out = Tensor(empty: outShape)
        let parts = tensors.map { $0.contiguous() }
        var offset = 0
        for (t, size) in zip(parts, sizes) {
            copyRows(t.data, srcStride: size * inner, out.data + offset * inner, dstStride: total * inner,
                     rows: outer, length: size * inner)
            offset += size
        }
        let shapes = parts.map(\.shape)
        return record(out, parts, "cat") { g, needs in
            let gc = g.contiguous()
            var offset = 0
            return zip(shapes, needs).map { shape, need in
                defer { offset += shape[d] }
                guard need else { return nil }
                let gi = Tensor(empty: shape)
                copyRows(gc.data + offset * inner, srcStride: total * inner, gi.data, dstStride: shape[d] * inner,
                         rows: outer, length: shape[d] * inner)
                return gi
            }
        }
    }

    /// Splits along `dim` into pieces of the given sizes (which must add up to the
    /// dim), as `torch.split` with a list. Pieces are views (`slice`).
    public func split(_ sizes: [Int], dim: Int) -> [Tensor] {
        let d = normalize(dim)
        boundaryCheck(sizes.allSatisfy { $0 >= 0 } && sizes.reduce(0, +) == shape[d],
                      "split sizes \(sizes) do not add up to \(shape[d]) (dim \(d) of \(shape))")
        var start = 0
        return sizes.map { size in
            defer { start += size }
            return slice(d, start, start + size)
        }
    }

    /// Splits along `dim` into `n` pieces of `ceil(size / n)` (the last may be smaller,
    /// and there may be fewer than `n`), as `torch.chunk`. Pieces are views.
    public func chunk(_ n: Int, dim: Int) -> [Tensor] {
        boundaryCheck(n > 0, "chunk count must be positive, got \(n)")
        let d = normalize(dim)
        let len = shape[d]
        let step = max(1, (len + n - 1) / n)
        if len == 0 { return [self] }
        return split(stride(from: 0, to: len, by: step).map { min(step, len - $0) }, dim: d)
    }
}
