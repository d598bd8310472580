import Foundation

/// A [B, H, rows, cols] tensor whose last dim is contiguous, addressed by strides so
/// that permuted views of [B, rows, H, cols] projections need no copy.
private struct HeadMatrix {
    let base: UnsafeMutablePointer<Float>
    let batchStride: Int, headStride: Int, rowStride: Int
    let tensor: Tensor  // keeps the storage alive

    init(_ t: Tensor) {
        let cols = t.shape[3]
        var src = t
        if !(t.strides[3] == 1 || cols == 1) || (t.shape[2] > 1 && t.strides[2] < cols) { src = t.contiguous() }
        base = src.data
        batchStride = src.strides[0]
        headStride = src.strides[1]
        rowStride = src.shape[2] > 1 ? src.strides[2] : max(cols, 1)
        tensor = src
    }

    @inline(__always)
    func at(_ b: Int, _ h: Int, row: Int = 0) -> UnsafeMutablePointer<Float> {
        base + b * batchStride + h * headStride + row * rowStride
    }
}

extension Tensor {
    /// Tile size: `attentionBlock` queries × `attentionKeyBlock` keys. Each worker holds
    /// one tile of scores (two in backward), so memory stays bounded however many heads
    /// and tokens there are. Tall tiles keep BLAS's repacking of K and V (once per query
    /// block) small next to the products; on the 2-core reference machine 512 × 512
    /// (1 MiB) measured a few percent faster than 256 × 512 and no slower than 512 × 1024.
    nonisolated(unsafe) static var attentionBlock = 512
    nonisolated(unsafe) static var attentionKeyBlock = 512

    /// Scaled dot-product attention, as `torch.nn.functional.scaled_dot_product_attention`:
    /// softmax(query · keyᵀ · scale) · value per batch item and head.
    ///
    /// - Parameters:
    ///   - query: [B, H, L, D].
    ///   - key: [B, H, S, D].
    ///   - value: [B, H, S, Dv].
    ///   - causal: query `i` attends only to keys `j <= i` (torch's `is_causal`, top-left aligned).
    ///   - scale: multiplies the scores; defaults to 1 / sqrt(D).
    /// - Returns: [B, H, L, Dv], stored as [B, L, H, Dv] (so `permute([0, 2, 1, 3])` of it is
    ///   contiguous, ready to merge heads without a copy).
    ///
    /// Inputs may be any views whose last dim is contiguous (others are copied). The score
    /// matrix is computed one tile of queries × keys at a time and never kept: backward
    /// recomputes it from the inputs, the output and the saved per-row log-sum-exp.
    public static func scaledDotProductAttention(query: Tensor, key: Tensor, value: Tensor,
                                                 causal: Bool = false, scale: Float? = nil) -> Tensor {
        // bf16 precision mode (BF16Ops.swift): autocast casts query, key and value.
        if Precision.compute == .bf16 {
            return Precision.with(.fp32) {
                scaledDotProductAttention(query: query.roundedToBF16(), key: key.roundedToBF16(),
                                          value: value.roundedToBF16(), causal: causal, scale: scale)
            }
        }
        boundaryCheck(query.rank == 4 && key.rank == 4 && value.rank == 4,
                      "scaledDotProductAttention needs [B, H, L, D] tensors, got \(query.shape), \(key.shape), \(value.shape)")
        let (b, h, l, d) = (query.shape[0], query.shape[1], query.shape[2], query.shape[3])
        let s = key.shape[2], dv = value.shape[3]
        boundaryCheck(key.shape == [b, h, s, d], "scaledDotProductAttention: key \(key.shape) does not fit query \(query.shape)")
        boundaryCheck(value.shape[0] == b && value.shape[1] == h && value.shape[2] == s,
                      "scaledDotProductAttention: value \(value.shape) does not fit key \(key.shape)")
        boundaryCheck(s > 0, "scaledDotProductAttention: no keys (key \(key.shape))")
        let q = HeadMatrix(query), k = HeadMatrix(key), v = HeadMatrix(value)
        let alpha = scale ?? 1 / Float(d).squareRoot()
        let geometry = AttentionGeometry(batch: b, heads: h, queries: l, keys: s, dim: d, valueDim: dv,
                                         causal: causal, scale: alpha, block: min(attentionBlock, max(l, 1)),
                                         keyBlock: min(attentionKeyBlock, s))

        let out = Tensor.headInterleaved([b, h, l, dv], zeroed: false)
        let lse = Tensor(empty: [b, h, l])
        if out.count > 0 { geometry.forward(q, k, v, out: HeadMatrix(out), lse: lse.data) }

        let inputs = [q.tensor, k.tensor, v.tensor]
        let saved = HeadMatrix(out.detached())  // detached: the closure must not own `out` (a cycle)
        return record(out, inputs, "scaledDotProductAttention") { g, needs in
            // Buffers that are not needed are never written: their products are skipped.
            // dQ is written whole; dK and dV are accumulated.
            let empty = saved.tensor.count == 0
            let grads = (0..<3).map { i in
                needs[i] ? Tensor.gradientBuffer(like: inputs[i], zeroed: i > 0 || empty) : nil
            }
            if !empty {
                geometry.backward(q, k, v, out: saved, lse: lse.data, gradOut: HeadMatrix(g),
                                  dq: grads[0].map(HeadMatrix.init), dk: grads[1].map(HeadMatrix.init),
                                  dv: grads[2].map(HeadMatrix.init))
            }
            return grads
        }
    }

    /// A [B, H, L, D] tensor stored as [B, L, H, D] (the layout of per-head views of a
    /// projection), zero-filled when `zeroed`.
    static func headInterleaved(_ shape: [Int], zeroed: Bool) -> Tensor {
        let (l, h, d) = (shape[2], shape[1], shape[3])
        let n = shape.reduce(1, *)
        return Tensor(storage: zeroed ? Storage(zeros: n) : Storage(count: n), shape: shape,
                      strides: [l * h * d, d, h * d, 1])
    }

    /// A gradient for `t`: contiguous when `t` is, else stored as [B, L, H, D], so the
    /// gradient of a permuted projection view comes back contiguous through `permute`.
    static func gradientBuffer(like t: Tensor, zeroed: Bool) -> Tensor {
        if t.isContiguous { return zeroed ? Tensor.zeros(t.shape) : Tensor(empty: t.shape) }
        return headInterleaved(t.shape, zeroed: zeroed)
    }
}

/// Sizes and options of one attention call, and its tiled kernels. Scores are made
/// `block` queries × `keyBlock` keys at a time (about 1 MiB), never the whole matrix.
private struct AttentionGeometry {
    let batch: Int, heads: Int, queries: Int, keys: Int, dim: Int, valueDim: Int
    let causal: Bool, scale: Float, block: Int, keyBlock: Int

    var blocks: Int { (queries + block - 1) / block }

    /// How far a later tile may exceed a row's reference max before the row is shifted
    /// again: exp(8) · keys cannot overflow, and a reference below the true max loses
    /// no precision (lse = reference + log Σ stays exact), so most tiles skip a pass.
    static let maxSlack: Float = 8

    /// Keys visible to any query of the block starting at `q0` with `rows` rows.
    @inline(__always) func keyCount(_ q0: Int, _ rows: Int) -> Int { causal ? min(keys, q0 + rows) : keys }
    /// Keys of the tile starting at key `k0` with `nk` keys visible to query `i`.
    @inline(__always) func visible(_ i: Int, _ k0: Int, _ nk: Int) -> Int { causal ? max(0, min(nk, i + 1 - k0)) : nk }

    /// out = softmax(scale · Q Kᵀ) V, lse = log Σ exp(scale · Q Kᵀ) per query row, with
    /// an online softmax over key tiles: the output rows are rescaled whenever a tile
    /// raises a row's running max. Work items are (head, query block) pairs with
    /// disjoint outputs, so any split among workers is race-free.
    func forward(_ q: HeadMatrix, _ k: HeadMatrix, _ v: HeadMatrix, out: HeadMatrix, lse: UnsafeMutablePointer<Float>) {
        let items = batch * heads * blocks
        BLAS.singleThreaded {
            forEachItem(items) { nextItem in
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: block * keyBlock + 2 * block)
                defer { buffer.deallocate() }
                let scores = buffer, rowMax = buffer + block * keyBlock, rowSum = rowMax + block
                while let item = nextItem() {
                    let head = item / blocks, (bi, hi) = (head / heads, head % heads)
                    let q0 = (item % blocks) * block, rows = min(block, queries - q0)
                    let o = out.at(bi, hi, row: q0)
                    var k0 = 0
                    while k0 < keyCount(q0, rows) {
                        let nk = min(keyBlock, keyCount(q0, rows) - k0), first = k0 == 0
                        // After the first tile the GEMM subtracts each row's running max
                        // itself (beta 1 onto -max), which also spares BLAS zeroing the tile.
                        if !first { for r in 0..<rows { (scores + r * nk).update(repeating: -rowMax[r], count: nk) } }
                        BLAS.sgemm(transA: false, transB: true, m: rows, n: nk, k: dim, alpha: scale,
                                   a: q.at(bi, hi, row: q0), lda: q.rowStride, b: k.at(bi, hi, row: k0), ldb: k.rowStride,
                                   beta: first ? 0 : 1, c: scores, ldc: nk)
                        for r in 0..<rows {
                            let row = scores + r * nk, n = visible(q0 + r, k0, nk)
                            if n < nk { (row + n).update(repeating: 0, count: nk - n) }
                            if n == 0 { continue }
                            // First tile: the row max. Later: how far the tile exceeds the running max.
                            let t = RowMath.max(row, n)
                            if first {
                                rowSum[r] = RowMath.expShifted(row, row, n, shift: t)
                                rowMax[r] = t
                            } else if t > AttentionGeometry.maxSlack {
                                let f = exp(-t)
                                RowMath.scale(o + r * out.rowStride, valueDim, by: f)
                                rowSum[r] = rowSum[r] * f + RowMath.expShifted(row, row, n, shift: t)
                                rowMax[r] += t
                            } else {
                                rowSum[r] += RowMath.exp(row, n)
                            }
                        }
                        BLAS.sgemm(transA: false, transB: false, m: rows, n: valueDim, k: nk,
                                   a: scores, lda: nk, b: v.at(bi, hi, row: k0), ldb: v.rowStride,
                                   beta: first ? 0 : 1, c: o, ldc: out.rowStride)
                        k0 += nk
                    }
                    for r in 0..<rows {
                        RowMath.scale(o + r * out.rowStride, valueDim, by: 1 / rowSum[r])
                        lse[head * queries + q0 + r] = rowMax[r] + log(rowSum[r])
                    }
                }
            }
        }
    }

    /// Input gradients from recomputed score tiles (nil buffers are not needed):
    /// P = exp(scale · Q Kᵀ − lse), dV += Pᵀ dO, dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O)),
    /// dQ = scale · dS K, dK += scale · dSᵀ Q. `dk` and `dv` must be zero on entry.
    ///
    /// Work items are heads, so each head's dK/dV is summed by one worker in a fixed
    /// order. When heads do not divide evenly among workers, each head's queries are
    /// split in `split` ranges; range 0 accumulates into dK/dV, the others into private
    /// buffers added afterwards in range order (deterministic for a fixed thread count).
    func backward(_ q: HeadMatrix, _ k: HeadMatrix, _ v: HeadMatrix, out: HeadMatrix, lse: UnsafeMutablePointer<Float>,
                  gradOut: HeadMatrix, dq: HeadMatrix?, dk: HeadMatrix?, dv: HeadMatrix?) {
        let bh = batch * heads, threads = Parallel.threads
        let split = dk == nil && dv == nil ? 1 : min(blocks, threads / gcd(bh, threads))
        let partialStride = keys * (dim + valueDim)
        let partials = split > 1 ? UnsafeMutablePointer<Float>.allocate(capacity: bh * (split - 1) * partialStride) : nil
        defer { partials?.deallocate() }
        // Without dK/dV, query blocks are independent: spread them like the forward.
        let perHead = dk == nil && dv == nil ? blocks : split

        BLAS.singleThreaded {
            forEachItem(bh * perHead) { nextItem in
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block * keyBlock + block)
                defer { buffer.deallocate() }
                let p = buffer, ds = buffer + block * keyBlock, rowDot = buffer + 2 * block * keyBlock
                while let item = nextItem() {
                    let head = item / perHead, part = item % perHead
                    let (bi, hi) = (head / heads, head % heads)
                    var dkBase = dk?.at(bi, hi), dvBase = dv?.at(bi, hi)
                    var dkStride = dk?.rowStride ?? 0, dvStride = dv?.rowStride ?? 0
                    if part > 0, let partials {
                        let base = partials + (head * (split - 1) + part - 1) * partialStride
                        base.update(repeating: 0, count: partialStride)
                        dkBase = base; dvBase = base + keys * dim
                        dkStride = dim; dvStride = valueDim
                    }
                    for blockIndex in (blocks * part / perHead)..<(blocks * (part + 1) / perHead) {
                        let q0 = blockIndex * block, rows = min(block, queries - q0)
                        let qp = q.at(bi, hi, row: q0), gp = gradOut.at(bi, hi, row: q0), op = out.at(bi, hi, row: q0)
                        if dq != nil || dkBase != nil {
                            for r in 0..<rows {
                                rowDot[r] = RowMath.dot(gp + r * gradOut.rowStride, op + r * out.rowStride, valueDim)
                            }
                        }
                        var k0 = 0
                        while k0 < keyCount(q0, rows) {
                            let nk = min(keyBlock, keyCount(q0, rows) - k0)
                            let kp = k.at(bi, hi, row: k0)
                            // GEMMs accumulate onto -lse and -rowDot: the subtractions come free
                            // and BLAS need not zero the tiles.
                            for r in 0..<rows { (p + r * nk).update(repeating: -lse[head * queries + q0 + r], count: nk) }
                            BLAS.sgemm(transA: false, transB: true, m: rows, n: nk, k: dim, alpha: scale,
                                       a: qp, lda: q.rowStride, b: kp, ldb: k.rowStride, beta: 1, c: p, ldc: nk)
                            for r in 0..<rows {
                                let row = p + r * nk, n = visible(q0 + r, k0, nk)
                                _ = RowMath.exp(row, n)
                                if n < nk { (row + n).update(repeating: 0, count: nk - n) }
                            }
                            if let dvBase {
                                BLAS.sgemm(transA: true, transB: false, m: nk, n: valueDim, k: rows,
                                           a: p, lda: nk, b: gp, ldb: gradOut.rowStride,
                                           beta: 1, c: dvBase + k0 * dvStride, ldc: dvStride)
                            }
                            if dq != nil || dkBase != nil {
                                for r in 0..<rows { (ds + r * nk).update(repeating: -rowDot[r], count: nk) }
                                BLAS.sgemm(transA: false, transB: true, m: rows, n: nk, k: valueDim,
                                           a: gp, lda: gradOut.rowStride, b: v.at(bi, hi, row: k0), ldb: v.rowStride,
                                           beta: 1, c: ds, ldc: nk)
                                RowMath.multiply(ds, by: p, rows * nk)
                            }
                            if let dq {
                                BLAS.sgemm(transA: false, transB: false, m: rows, n: dim, k: nk, alpha: scale,
                                           a: ds, lda: nk, b: kp, ldb: k.rowStride,
                                           beta: k0 == 0 ? 0 : 1, c: dq.at(bi, hi, row: q0), ldc: dq.rowStride)
                            }
                            if let dkBase {
                                BLAS.sgemm(transA: true, transB: false, m: nk, n: dim, k: rows, alpha: scale,
                                           a: ds, lda: nk, b: qp, ldb: q.rowStride,
                                           beta: 1, c: dkBase + k0 * dkStride, ldc: dkStride)
                            }
                            k0 += nk
                        }
                    }
                }
            }
        }

        guard let partials else { return }
        Parallel.forEach(bh, grain: 1) { range in
            for head in range {
                let (bi, hi) = (head / heads, head % heads)
                for part in 1..<split {
                    let src = partials + (head * (split - 1) + part - 1) * partialStride
                    for j in 0..<keys {
                        if let dk {
                            let dst = dk.at(bi, hi, row: j), sk = src + j * dim
                            for c in 0..<dim { dst[c] += sk[c] }
                        }
                        if let dv {
                            let dst = dv.at(bi, hi, row: j), sv = src + keys * dim + j * valueDim
                            for c in 0..<valueDim { dst[c] += sv[c] }
                        }
                    }
                }
            }
        }
    }
}

/// Runs `worker` on each of `Parallel.threads` workers; workers take items `0..<n` one
/// at a time from a shared counter, so a worker slowed by other processes does not
/// hold the rest back. An item's result must not depend on which worker runs it.
private func forEachItem(_ n: Int, _ worker: (_ nextItem: () -> Int?) -> Void) {
    // A lock rather than an atomic: items take milliseconds, and `Atomic` needs macOS 15.
    let lock = NSLock()
    var next = 0
    Parallel.forEach(min(n, Parallel.threads), grain: 1) { workers in
        for _ in workers {
            worker {
                lock.lock()
                defer { lock.unlock() }
                guard next < n else { return nil }
                next += 1
                return next - 1
            }
        }
    }
}

private func gcd(_ a: Int, _ b: Int) -> Int {
    var (x, y) = (a, b)
    while y != 0 { (x, y) = (y, x % y) }
    return x
}
