import Foundation

/// Views share storage with their source; their backward maps the gradient back.
extension Tensor {
    /// Same values in a new shape (one dimension may be -1). A view when contiguous,
    /// a copy otherwise.
    public func reshape(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            boundaryCheck(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            s[i] = count / known
        }
        boundaryCheck(s.reduce(1, *) == count, "cannot reshape \(shape) (\(count) values) to \(newShape)")
        let src = contiguous()
        let out = Tensor(storage: src.storage, shape: s, offset: src.offset)
        let inShape = shape
        return record(out, [src], "reshape") { g, _ in [g.reshape(inShape)] }
    }

    /// Reorders dimensions (a view).
    public func permute(_ dims: [Int]) -> Tensor {
        boundaryCheck(dims.count == rank && Set(dims) == Set(0..<rank), "permute \(dims) invalid for rank \(rank)")
        let out = Tensor(storage: storage, shape: dims.map { shape[$0] }, strides: dims.map { strides[$0] }, offset: offset)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, d) in dims.enumerated() { inverse[d] = i }
        return record(out, [self], "permute") { g, _ in [g.permute(inverse)] }
    }

    /// Swaps two dimensions (a view).
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var dims = Array(0..<rank)
        dims.swapAt(normalize(a), normalize(b))
        return permute(dims)
    }

    /// Elements `start..<end` along `dim` (a view).
    public func slice(_ dim: Int, _ start: Int, _ end: Int) -> Tensor {
        let d = normalize(dim)
        boundaryCheck(start >= 0 && start <= end && end <= shape[d], "slice \(start)..<\(end) out of range for dim \(d) of \(shape)")
        var s = shape
        s[d] = end - start
        let out = Tensor(storage: storage, shape: s, strides: strides, offset: offset + start * strides[d])
        let inShape = shape
        return record(out, [self], "slice") { g, _ in
            let full = Tensor.zeros(inShape)
            full.slice(d, start, end).assign(g)
            return [full]
        }
    }

    /// Broadcasts size-1 dimensions to `newShape` (a view with stride 0).
    public func expand(_ newShape: [Int]) -> Tensor {
        boundaryCheck(newShape.count >= rank, "expand: \(shape) to \(newShape)")
        let lead = newShape.count - rank
        var st = [Int](repeating: 0, count: newShape.count)
        for i in 0..<newShape.count {
            if i < lead { st[i] = 0; continue }
            let j = i - lead
            if shape[j] == newShape[i] { st[i] = strides[j] } else {
                boundaryCheck(shape[j] == 1, "expand: cannot broadcast \(shape) to \(newShape)")
                st[i] = 0
            }
        }
        let out = Tensor(storage: storage, shape: newShape, strides: st, offset: offset)
        let inShape = shape
        return record(out, [self], "expand") { g, _ in [g.sum(toShape: inShape)] }
    }

    /// Copies `src` (same shape) into this tensor's elements, in place, without autograd.
    /// Used to fill views of freshly made buffers.
    public func assign(_ src: Tensor) {
        boundaryCheck(src.shape == shape, "assign: \(src.shape) into \(shape)")
        if isContiguous {
            if src.isContiguous { data.update(from: src.data, count: count) } else { src.copyStrided(into: data) }
            return
        }
        // Strided destination: walk both with the same index.
        let c = src.contiguous()
        let n = count
        if n == 0 { return }
        var idx = [Int](repeating: 0, count: rank)
        let dst = data, s = c.data
        for i in 0..<n {
            var o = 0
            for d in 0..<rank { o += idx[d] * strides[d] }
            dst[o] = s[i]
            var d = rank - 1
            while d >= 0 { idx[d] += 1; if idx[d] < shape[d] { break }; idx[d] = 0; d -= 1 }
        }
    }

    /// Sums a broadcast gradient back down to `target` (leading dims dropped, size-1
    /// dims summed), the inverse of broadcasting.
    public func sum(toShape target: [Int]) -> Tensor {
        if shape == target { return self }
        boundaryCheck(target.count <= rank, "sum(toShape:) \(shape) -> \(target)")
        let lead = rank - target.count
        let padded = [Int](repeating: 1, count: lead) + target
        let src = contiguous()
        let out = Tensor.zeros(target)
        // Row-major walk; output index from broadcast rules.
        let n = count
        let outStrides = Tensor.contiguousStrides(padded).enumerated().map { padded[$0.offset] == 1 ? 0 : $0.element }
        let inner = shape[rank - 1]
        let innerOutStride = outStrides[rank - 1]
        var idx = [Int](repeating: 0, count: rank)
        let s = src.data, o = out.data
        var i = 0
        while i < n {
            var base = 0
            for d in 0..<(rank - 1) { base += idx[d] * outStrides[d] }
            if innerOutStride == 0 {
                var acc: Float = 0
                for k in 0..<inner { acc += s[i + k] }
                o[base] += acc
            } else {
                for k in 0..<inner { o[base + k] += s[i + k] }
            }
            i += inner
            var d = rank - 2
            while d >= 0 { idx[d] += 1; if idx[d] < shape[d] { break }; idx[d] = 0; d -= 1 }
        }
        return out
    }
}
