import Foundation

/// Tuning knobs of the convolution kernels (internal: tests shrink the tile so small
/// fixtures exercise the tiling paths).
enum Conv2dTuning {
    /// Upper bound on the im2col tile, in floats (whole output rows; at least one row).
    nonisolated(unsafe) static var maxColumnFloats = 3 << 20
}

/// Shape bookkeeping shared by the forward and backward kernels (NCHW, groups 1).
struct ConvGeometry {
    let n, c, h, w, o, kh, kw, stride, pad, oh, ow: Int

    var ckk: Int { c * kh * kw }
    var inPlane: Int { h * w }
    var outPlane: Int { oh * ow }
    /// 1x1, stride 1, no padding: the convolution is a plain GEMM per image.
    var isPointwise: Bool { kh == 1 && kw == 1 && stride == 1 && pad == 0 }

    /// Output rows per im2col tile, so the column buffer stays within the tuning bound.
    var tileRows: Int { max(1, min(oh, Conv2dTuning.maxColumnFloats / max(ckk * ow, 1))) }

    /// Output columns `lo..<hi` whose input column `q * stride - pad + kj` lies inside the image.
    @inline(__always)
    func validColumns(_ kj: Int) -> (lo: Int, hi: Int) {
        let u = pad - kj, t = w - 1 + pad - kj
        let lo = u <= 0 ? 0 : (u + stride - 1) / stride
        let hi = t < 0 ? 0 : min(ow, t / stride + 1)
        return (lo, max(lo, hi))
    }

    /// Unfolds output rows `rows` of one image: `col[(c, ki, kj), (r, q)] = x[c, r*s - p + ki, q*s - p + kj]`
    /// (zero in the padding), row-major with `rows.count * ow` columns.
    func im2col(_ x: UnsafePointer<Float>, rows: Range<Int>, into col: UnsafeMutablePointer<Float>) {
        let cols = rows.count * ow
        let g = self
        Parallel.forEach(ckk, grain: max(1, 4096 / max(cols, 1))) { range in
            for r in range {
                let ch = r / (g.kh * g.kw), ki = (r / g.kw) % g.kh, kj = r % g.kw
                let (lo, hi) = g.validColumns(kj)
                let plane = x + ch * g.inPlane
                var dst = col + r * cols
                for orow in rows {
                    let ih = orow * g.stride - g.pad + ki
                    if ih < 0 || ih >= g.h || lo == hi {
                        dst.update(repeating: 0, count: g.ow)
                    } else {
                        if lo > 0 { dst.update(repeating: 0, count: lo) }
                        let src = plane + ih * g.w - g.pad + kj
                        if g.stride == 1 {
                            (dst + lo).update(from: src + lo, count: hi - lo)
                        } else {
                            for q in lo..<hi { dst[q] = src[q * g.stride] }
                        }
                        if hi < g.ow { (dst + hi).update(repeating: 0, count: g.ow - hi) }
                    }
                    dst += g.ow
                }
            }
        }
    }

    /// The adjoint of `im2col`: adds `col` (same layout) into the image gradient `gx`.
    /// Parallel over input channels, so every thread writes its own planes.
    func col2im(_ col: UnsafePointer<Float>, rows: Range<Int>, into gx: UnsafeMutablePointer<Float>) {
        let cols = rows.count * ow
        let g = self
        Parallel.forEach(c, grain: max(1, 4096 / max(cols * kh * kw, 1))) { range in
            for ch in range {
                let plane = gx + ch * g.inPlane
                for ki in 0..<g.kh {
                    for kj in 0..<g.kw {
                        let (lo, hi) = g.validColumns(kj)
                        if lo == hi { continue }
                        var src = col + ((ch * g.kh + ki) * g.kw + kj) * cols
                        for orow in rows {
                            defer { src += g.ow }
                            let ih = orow * g.stride - g.pad + ki
                            if ih < 0 || ih >= g.h { continue }
                            let dst = plane + ih * g.w - g.pad + kj
                            if g.stride == 1 {
                                for q in lo..<hi { dst[q] += src[q] }
                            } else {
                                for q in lo..<hi { dst[q * g.stride] += src[q] }
                            }
                        }
                    }
                }
            }
        }
    }
}

extension Tensor {
    /// 2-D convolution of an NCHW input with weight [out, in, kh, kw] and optional bias
    /// [out], as `torch.nn.functional.conv2d(x, weight, bias, stride, padding)` with
    /// groups 1 (cross-correlation, zero padding on all four sides).
    public func conv2d(_ weight: Tensor, _ bias: Tensor? = nil, stride: Int = 1, padding: Int = 0) -> Tensor {
        precondition(rank == 4, "conv2d: input must be NCHW, got shape \(shape)")
        precondition(weight.rank == 4, "conv2d: weight must be [out, in, kh, kw], got \(weight.shape)")
        precondition(weight.shape[1] == shape[1], "conv2d: input has \(shape[1]) channels, weight \(weight.shape) expects \(weight.shape[1])")
        precondition(stride >= 1 && padding >= 0, "conv2d: stride \(stride) must be >= 1 and padding \(padding) >= 0")
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        if let bias { precondition(bias.shape == [o], "conv2d: bias \(bias.shape) for weight \(weight.shape)") }
        let oh = (shape[2] + 2 * padding - kh) / stride + 1, ow = (shape[3] + 2 * padding - kw) / stride + 1
        precondition(shape[2] + 2 * padding >= kh && shape[3] + 2 * padding >= kw,
                     "conv2d: kernel \(kh)x\(kw) larger than padded input \(shape)")
        let g = ConvGeometry(n: shape[0], c: shape[1], h: shape[2], w: shape[3], o: o, kh: kh, kw: kw,
                             stride: stride, pad: padding, oh: oh, ow: ow)
        let x = contiguous(), wt = weight.contiguous(), b = bias?.contiguous()
        let out = Tensor(empty: [g.n, o, oh, ow])
        Tensor.convForward(g, x.data, wt.data, b?.data, out.data)

        let inputs = b.map { [x, wt, $0] } ?? [x, wt]
        return record(out, inputs, "conv2d") { grad, needs in
            let gOut = grad.contiguous()
            let gx = needs[0] ? Tensor(empty: x.shape) : nil
            let gw = needs[1] ? Tensor(empty: wt.shape) : nil
            Tensor.convBackward(g, x.data, wt.data, gOut.data, gx?.data, gw?.data)
            var grads: [Tensor?] = [gx, gw]
            if inputs.count == 3 { grads.append(needs[2] ? Tensor.channelSums(gOut, channels: o) : nil) }
            return grads
        }
    }

    static func convForward(_ g: ConvGeometry, _ x: UnsafeMutablePointer<Float>, _ w: UnsafeMutablePointer<Float>,
                            _ bias: UnsafeMutablePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        // The bias is written into the output tile just before the GEMM accumulates onto
        // it (beta 1): OpenBLAS clears C for beta 0 anyway, so the bias costs nothing extra.
        func fillBias(_ dst: UnsafeMutablePointer<Float>, count: Int) {
            guard let bias else { return }
            Parallel.forEach(g.o, grain: max(1, 16384 / max(count, 1))) { r in
                for oc in r { (dst + oc * g.outPlane).update(repeating: bias[oc], count: count) }
            }
        }
        let beta: Float = bias == nil ? 0 : 1
        if g.isPointwise {
            for img in 0..<g.n {
                let o = out + img * g.o * g.outPlane
                fillBias(o, count: g.outPlane)
                BLAS.sgemm(transA: false, transB: false, m: g.o, n: g.outPlane, k: g.c, a: w, lda: g.c,
                           b: x + img * g.c * g.inPlane, ldb: g.inPlane, beta: beta, c: o, ldc: g.outPlane)
            }
            return
        }
        let tile = g.tileRows
        let col = UnsafeMutablePointer<Float>.allocate(capacity: g.ckk * tile * g.ow)
        defer { col.deallocate() }
        for img in 0..<g.n {
            let xi = x + img * g.c * g.inPlane, oi = out + img * g.o * g.outPlane
            for r0 in stride(from: 0, to: g.oh, by: tile) {
                let rows = r0..<min(g.oh, r0 + tile), cols = rows.count * g.ow
                g.im2col(xi, rows: rows, into: col)
                fillBias(oi + r0 * g.ow, count: cols)
                BLAS.sgemm(transA: false, transB: false, m: g.o, n: cols, k: g.ckk, a: w, lda: g.ckk,
                           b: col, ldb: cols, beta: beta, c: oi + r0 * g.ow, ldc: g.outPlane)
            }
        }
    }

    /// Input gradient into `gx` and weight gradient into `gw`, each only when non-nil.
    static func convBackward(_ g: ConvGeometry, _ x: UnsafeMutablePointer<Float>, _ w: UnsafeMutablePointer<Float>,
                             _ gOut: UnsafeMutablePointer<Float>,
                             _ gx: UnsafeMutablePointer<Float>?, _ gw: UnsafeMutablePointer<Float>?) {
        if gx == nil && gw == nil { return }
        if g.isPointwise {
            for img in 0..<g.n {
                let go = gOut + img * g.o * g.outPlane, xi = x + img * g.c * g.inPlane
                if let gx {
                    BLAS.sgemm(transA: true, transB: false, m: g.c, n: g.inPlane, k: g.o, a: w, lda: g.c,
                               b: go, ldb: g.outPlane, c: gx + img * g.c * g.inPlane, ldc: g.inPlane)
                }
                if let gw {
                    BLAS.sgemm(transA: false, transB: true, m: g.o, n: g.c, k: g.inPlane, a: go, lda: g.outPlane,
                               b: xi, ldb: g.inPlane, beta: img == 0 ? 0 : 1, c: gw, ldc: g.c)
                }
            }
            return
        }
        if let gx { gx.update(repeating: 0, count: g.n * g.c * g.inPlane) }
        let tile = g.tileRows
        // One buffer serves the input's columns (for the weight gradient) and then the
        // columns' gradient (for the input gradient) of the same tile.
        let col = UnsafeMutablePointer<Float>.allocate(capacity: g.ckk * tile * g.ow)
        defer { col.deallocate() }
        var first = true
        for img in 0..<g.n {
            let xi = x + img * g.c * g.inPlane, go = gOut + img * g.o * g.outPlane
            for r0 in stride(from: 0, to: g.oh, by: tile) {
                let rows = r0..<min(g.oh, r0 + tile), cols = rows.count * g.ow
                if let gw {
                    g.im2col(xi, rows: rows, into: col)
                    BLAS.sgemm(transA: false, transB: true, m: g.o, n: g.ckk, k: cols, a: go + r0 * g.ow, lda: g.outPlane,
                               b: col, ldb: cols, beta: first ? 0 : 1, c: gw, ldc: g.ckk)
                    first = false
                }
                if let gx {
                    BLAS.sgemm(transA: true, transB: false, m: g.ckk, n: cols, k: g.o, a: w, lda: g.ckk,
                               b: go + r0 * g.ow, ldb: g.outPlane, c: col, ldc: cols)
                    g.col2im(col, rows: rows, into: gx + img * g.c * g.inPlane)
                }
            }
        }
    }

    /// Σ over batch and spatial positions per channel of a contiguous [N, C, ...] tensor.
    static func channelSums(_ t: Tensor, channels: Int) -> Tensor {
        let n = t.shape[0], plane = t.count / max(n * channels, 1)
        let out = Tensor(empty: [channels])
        let src = t.data, dst = out.data
        Parallel.forEach(channels, grain: max(1, 16384 / max(n * plane, 1))) { r in
            for ch in r {
                var acc = 0.0
                for img in 0..<n { acc += Double(sumFloats(src + (img * channels + ch) * plane, plane)) }
                dst[ch] = Float(acc)
            }
        }
        return out
    }
}

/// Sum of `n` floats with 16 independent lanes (vectorises; error grows like √(n/16)).
@inline(__always)
func sumFloats(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>(repeating: 0)
    var i = 0
    while i + 16 <= n {
        acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
        i += 16
    }
    var s = acc.sum()
    while i < n { s += p[i]; i += 1 }
    return s
}
