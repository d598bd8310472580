import Foundation

extension Tensor {
    /// 2-D convolution of an NCHW input with weight [out, in, kh, kw] and optional bias
    /// [out], as `torch.nn.functional.conv2d(x, weight, bias, stride, padding)` with
    /// groups 1 (cross-correlation, zero padding on all four sides).
    ///
    /// 1x1 stride-1 convolutions are one GEMM per image; 3x3 stride-1 ones use Winograd
    /// F(2x2, 3x3) (up to 512 channels; rounding within a few ulps of direct summation);
    /// the rest unfold tiles of output rows (im2col) into GEMMs.
    public func conv2d(_ weight: Tensor, _ bias: Tensor? = nil, stride: Int = 1, padding: Int = 0) -> Tensor {
        // bf16 precision mode (BF16Ops.swift).
        if Precision.gemmInBF16(weight: weight.storage) { return conv2dInBF16(weight, bias, stride: stride, padding: padding) }
        return conv2dFloat32(weight, bias, stride: stride, padding: padding)
    }

    func conv2dFloat32(_ weight: Tensor, _ bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        boundaryCheck(rank == 4, "conv2d: input must be NCHW, got shape \(shape)")
        boundaryCheck(weight.rank == 4, "conv2d: weight must be [out, in, kh, kw], got \(weight.shape)")
        boundaryCheck(weight.shape[1] == shape[1], "conv2d: input has \(shape[1]) channels, weight \(weight.shape) expects \(weight.shape[1])")
        boundaryCheck(stride >= 1 && padding >= 0, "conv2d: stride \(stride) must be >= 1 and padding \(padding) >= 0")
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        if let bias { boundaryCheck(bias.shape == [o], "conv2d: bias \(bias.shape) for weight \(weight.shape)") }
        let oh = (shape[2] + 2 * padding - kh) / stride + 1, ow = (shape[3] + 2 * padding - kw) / stride + 1
        boundaryCheck(shape[2] + 2 * padding >= kh && shape[3] + 2 * padding >= kw,
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
            if gx != nil || gw != nil { Tensor.convBackward(g, x.data, wt.data, gOut.data, gx?.data, gw?.data) }
            var grads: [Tensor?] = [gx, gw]
            if inputs.count == 3 { grads.append(needs[2] ? Tensor.channelSums(gOut, channels: o) : nil) }
            return grads
        }
    }

    static func convForward(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                            _ bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        // The bias is written into the output tile just before the GEMM accumulates onto
        // it (beta 1): OpenBLAS clears C for beta 0 anyway, so the bias costs nothing extra.
        func fillBias(_ dst: UnsafeMutablePointer<Float>, count: Int, parallel: Bool = false) {
            guard let bias else { return }
            Parallel.forEach(g.o, grain: parallel ? max(1, 32768 / max(count, 1)) : g.o) { r in
                for oc in r { (dst + oc * g.outPlane).update(repeating: bias[oc], count: count) }
            }
        }
        let beta: Float = bias == nil ? 0 : 1
        if g.isPointwise {
            for img in 0..<g.n {
                let o = out + img * g.o * g.outPlane
                fillBias(o, count: g.outPlane, parallel: true)
                BLAS.sgemm(transA: false, transB: false, m: g.o, n: g.outPlane, k: g.c, a: w, lda: g.c,
                           b: x + img * g.c * g.inPlane, ldb: g.inPlane, beta: beta, c: o, ldc: g.outPlane)
            }
            return
        }
        if Winograd.applies(g) {
            Winograd.forward(g, x, w, bias, out)
            return
        }
        if Winograd.appliesByChannelBlocks(g) {
            Winograd.forwardByChannelBlocks(g, x, w, bias, out)
            return
        }
        if splitsChannels(g) {
            let tiles = convTiles(g, onePerThread: false)
            let col = g.columnBuffer(for: tiles[...])
            defer { col.deallocate() }
            for (img, rows) in tiles {
                let cols = rows.count * g.ow, o = out + img * g.o * g.outPlane + rows.lowerBound * g.ow
                g.im2col(x + img * g.c * g.inPlane, rows: rows, into: col)
                fillBias(o, count: cols, parallel: true)
                BLAS.sgemm(transA: false, transB: false, m: g.o, n: cols, k: g.ckk, a: w, lda: g.ckk,
                           b: col, ldb: cols, beta: beta, c: o, ldc: g.outPlane)
            }
            return
        }
        forEachTileChunk(g) { _, tiles, col in
            for (img, rows) in tiles {
                let cols = rows.count * g.ow, o = out + img * g.o * g.outPlane + rows.lowerBound * g.ow
                g.im2col(x + img * g.c * g.inPlane, rows: rows, into: col, serial: true)
                fillBias(o, count: cols)
                BLAS.sgemm(transA: false, transB: false, m: g.o, n: cols, k: g.ckk, a: w, lda: g.ckk,
                           b: col, ldb: cols, beta: beta, c: o, ldc: g.outPlane)
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
                for img in 0..<n { acc += convSumFloats(src + (img * channels + ch) * plane, plane) }
                dst[ch] = Float(acc)
            }
        }
        return out
    }
}

/// Sum of `n` floats: blocks of 4096 in 16 float lanes (vectorises), block sums in Double.
@inline(__always)
private func convSumFloats(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
    var total = 0.0, start = 0
    while start < n {
        let end = min(n, start + 4096)
        var acc = SIMD16<Float>(repeating: 0)
        var i = start
        while i + 16 <= end {
            acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
            i += 16
        }
        var s = acc.sum()
        while i < end { s += p[i]; i += 1 }
        total += Double(s)
        start = end
    }
    return total
}
