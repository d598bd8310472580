import Foundation

/// Tuning knobs of the convolution kernels (internal: tests shrink the tile so small
/// fixtures exercise the tiling paths).
enum Conv2dTuning {
    /// Upper bound on the im2col tile, in floats (whole output rows; at least one row).
    nonisolated(unsafe) static var maxColumnFloats = 3 << 20
    /// 3x3 stride-1 convolutions use Winograd F(2x2, 3x3) (2.25x fewer multiplies).
    nonisolated(unsafe) static var winograd = true
    /// Upper bound on one thread's Winograd buffers (transformed input and product), in floats.
    nonisolated(unsafe) static var winogradBandFloats = 3 << 20
    /// Upper bound on the Winograd weight gradient's per-thread sums (16·out·in floats
    /// each); wider layers take the im2col path, which needs no such buffers.
    nonisolated(unsafe) static var winogradWeightGradFloats = 16 << 20
    /// Largest weight (in floats) whose im2col gradient is summed per thread; wider
    /// weights are summed once, tile after tile.
    nonisolated(unsafe) static var maxWeightPartialFloats = 4 << 20
    /// Forces (true) or forbids (false) splitting im2col GEMMs by output channels;
    /// nil decides by shape (`Tensor.splitsChannels`).
    nonisolated(unsafe) static var channelSplit: Bool? = nil
    /// Largest transformed weight (16·out·in floats) Winograd builds whole; wider layers
    /// take `Winograd.forwardByChannelBlocks` or im2col.
    nonisolated(unsafe) static var winogradMaxWeightFloats = 16 << 20
    /// Output channels per block of the wide-layer Winograd path.
    nonisolated(unsafe) static var winogradOutputBlock = 128
    /// Fewest 2x2 output tiles per image for Winograd. Below (16x16 outputs at 512 px)
    /// transforming the weights every call costs more than the multiplies it saves:
    /// 640->1280 at 16x16 ran at half the speed of im2col, 1280x1280 20% slower.
    nonisolated(unsafe) static var winogradMinTiles = 256
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

    /// An im2col buffer for the tallest of `tiles` (the caller deallocates it).
    func columnBuffer(for tiles: ArraySlice<(img: Int, rows: Range<Int>)>) -> UnsafeMutablePointer<Float> {
        .allocate(capacity: ckk * (tiles.map(\.rows.count).max() ?? 0) * ow)
    }

    /// Unfolds output rows `rows` of one image: `col[(c, ki, kj), (r, q)] = x[c, r*s - p + ki, q*s - p + kj]`
    /// (zero in the padding), row-major with `rows.count * ow` columns.
    /// `serial` when the caller already runs one tile per thread.
    func im2col(_ x: UnsafePointer<Float>, rows: Range<Int>, into col: UnsafeMutablePointer<Float>, serial: Bool = false) {
        let cols = rows.count * ow
        let g = self
        Parallel.forEach(ckk, grain: serial ? ckk : max(1, 4096 / max(cols, 1))) { range in
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

    /// Output tiles (image, rows) of balanced sizes: at most `tileRows` rows, and at
    /// least one tile per thread.
    static func convTiles(_ g: ConvGeometry, onePerThread: Bool = true) -> [(img: Int, rows: Range<Int>)] {
        let perThread = onePerThread ? (Parallel.threads + g.n - 1) / g.n : 1
        let perImage = min(g.oh, max((g.oh + g.tileRows - 1) / g.tileRows, perThread))
        var tiles: [(img: Int, rows: Range<Int>)] = []
        for img in 0..<g.n {
            for t in 0..<perImage { tiles.append((img, (g.oh * t / perImage)..<(g.oh * (t + 1) / perImage))) }
        }
        return tiles
    }

    /// Wide layers on small images (more output channels per thread than output
    /// pixels) unfold one tile at a time and split its GEMM by output channels: with a
    /// tile per thread every thread would repack the whole weight (118 MB for the
    /// 2560->1280 decoder convolutions' input gradient at 16x16).
    static func splitsChannels(_ g: ConvGeometry) -> Bool {
        Conv2dTuning.channelSplit ?? (g.o * Parallel.threads > g.outPlane)
    }

    /// Splits the tiles between threads; each thread unfolds its tiles into its own
    /// column buffer and multiplies with single-threaded GEMMs. Threads never wait on
    /// each other, and unfolding overlaps with the other thread's GEMM.
    /// `body(chunkStart, tiles, col)`.
    static func forEachTileChunk(_ g: ConvGeometry,
                                 _ body: (Int, ArraySlice<(img: Int, rows: Range<Int>)>, UnsafeMutablePointer<Float>) -> Void) {
        let tiles = convTiles(g)
        BLAS.singleThreaded {
            Parallel.forEach(tiles.count) { range in
                let col = g.columnBuffer(for: tiles[...])
                defer { col.deallocate() }
                body(range.lowerBound, tiles[range], col)
            }
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

    /// Input gradient into `gx` and weight gradient into `gw`, each only when non-nil.
    static func convBackward(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                             _ gOut: UnsafePointer<Float>,
                             _ gx: UnsafeMutablePointer<Float>?, _ gw: UnsafeMutablePointer<Float>?) {
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
        if let gw {
            if Winograd.applies(g) && 16 * g.o * g.c * Parallel.threads <= Conv2dTuning.winogradWeightGradFloats {
                Winograd.weightGrad(g, x, gOut, gw)
            } else {
                convWeightGrad(g, x, gOut, gw)
            }
        }
        if let gx {
            if g.stride == 1 && g.kh == g.kw && g.pad < g.kh {
                convInputGradAsConv(g, w, gOut, gx)
            } else {
                convInputGradCol2im(g, w, gOut, gx)
            }
        }
    }

    /// gW = Σ_tiles gOut_tile · colsᵀ, each thread summing its tiles into its own buffer;
    /// the buffers are added in tile order, so the result depends only on the thread count.
    static func convWeightGrad(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ gOut: UnsafePointer<Float>,
                               _ gw: UnsafeMutablePointer<Float>) {
        let size = g.o * g.ckk
        if size > Conv2dTuning.maxWeightPartialFloats {
            // Wide layers (small images): one sum, tiles in turn, each GEMM split over the threads.
            let tiles = convTiles(g)
            let col = g.columnBuffer(for: tiles[...])
            defer { col.deallocate() }
            for (i, (img, rows)) in tiles.enumerated() {
                let cols = rows.count * g.ow
                g.im2col(x + img * g.c * g.inPlane, rows: rows, into: col)
                BLAS.sgemm(transA: false, transB: true, m: g.o, n: g.ckk, k: cols,
                           a: gOut + img * g.o * g.outPlane + rows.lowerBound * g.ow, lda: g.outPlane,
                           b: col, ldb: cols, beta: i == 0 ? 0 : 1, c: gw, ldc: g.ckk)
            }
            return
        }
        let tileCount = convTiles(g).count
        let partials = UnsafeMutableBufferPointer<UnsafeMutablePointer<Float>?>.allocate(capacity: tileCount)
        partials.initialize(repeating: nil)
        defer {
            for p in partials { p?.deallocate() }
            partials.deallocate()
        }
        forEachTileChunk(g) { start, tiles, col in
            let dst = start == 0 ? gw : UnsafeMutablePointer<Float>.allocate(capacity: size)
            if start != 0 { partials[start] = dst }
            var first = true
            for (img, rows) in tiles {
                let cols = rows.count * g.ow
                g.im2col(x + img * g.c * g.inPlane, rows: rows, into: col, serial: true)
                BLAS.sgemm(transA: false, transB: true, m: g.o, n: g.ckk, k: cols,
                           a: gOut + img * g.o * g.outPlane + rows.lowerBound * g.ow, lda: g.outPlane,
                           b: col, ldb: cols, beta: first ? 0 : 1, c: dst, ldc: g.ckk)
                first = false
            }
        }
        let extra = partials.compactMap { $0 }
        if extra.isEmpty { return }
        Parallel.forEach(size, grain: 1 << 15) { r in
            for p in extra { for i in r { gw[i] += p[i] } }
        }
    }

    /// For stride 1 and a square kernel the input gradient is itself a convolution: of
    /// the output gradient with the weight transposed to [in, out] and flipped in both
    /// spatial axes, padded by k - 1 - p. Its tiles do not overlap (unlike col2im's).
    static func convInputGradAsConv(_ g: ConvGeometry, _ w: UnsafePointer<Float>, _ gOut: UnsafePointer<Float>,
                                    _ gx: UnsafeMutablePointer<Float>) {
        let k2 = g.kh * g.kw
        let flipped = UnsafeMutablePointer<Float>.allocate(capacity: g.o * g.ckk)
        defer { flipped.deallocate() }
        // Blocks of 16 input channels: reads stay contiguous and only 16 write streams
        // are open (one channel at a time touched a new page per read).
        let block = 16
        Parallel.forEach((g.c + block - 1) / block, grain: max(1, 4096 / max(block * g.o * k2, 1))) { r in
            for cb in r {
                let channels = (cb * block)..<min(g.c, (cb + 1) * block)
                for oc in 0..<g.o {
                    for ci in channels {
                        let src = w + (oc * g.c + ci) * k2, dst = flipped + (ci * g.o + oc) * k2
                        for t in 0..<k2 { dst[t] = src[k2 - 1 - t] }
                    }
                }
            }
        }
        let t = ConvGeometry(n: g.n, c: g.o, h: g.oh, w: g.ow, o: g.c, kh: g.kh, kw: g.kw,
                             stride: 1, pad: g.kh - 1 - g.pad, oh: g.h, ow: g.w)
        convForward(t, gOut, flipped, nil, gx)
    }

    /// General input gradient: per tile, columns' gradient Wᵀ · gOut_tile, scattered back
    /// by col2im. Neighbouring tiles overlap in the input, so tiles run one after another.
    static func convInputGradCol2im(_ g: ConvGeometry, _ w: UnsafePointer<Float>, _ gOut: UnsafePointer<Float>,
                                    _ gx: UnsafeMutablePointer<Float>) {
        gx.update(repeating: 0, count: g.n * g.c * g.inPlane)
        let tiles = convTiles(g)
        let col = g.columnBuffer(for: tiles[...])
        defer { col.deallocate() }
        for (img, rows) in tiles {
            let cols = rows.count * g.ow
            BLAS.sgemm(transA: true, transB: false, m: g.ckk, n: cols, k: g.o, a: w, lda: g.ckk,
                       b: gOut + img * g.o * g.outPlane + rows.lowerBound * g.ow, ldb: g.outPlane, c: col, ldc: cols)
            g.col2im(col, rows: rows, into: gx + img * g.c * g.inPlane)
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

/// Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: each 2x2 output tile is
/// Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for its 4x4 input patch d, so the channel contraction
/// becomes 16 GEMMs (one per position ξ of the 4x4 transformed tile) with 16/36 of
/// the direct multiplies. The transforms only add, subtract and halve, so rounding
/// stays within a few ulps of the direct sum.
enum Winograd {
    /// 3x3 stride 1 on outputs of at least `winogradMinTiles` tiles, with a transformed
    /// weight (16·out·in floats) of at most 64 MiB; wider layers take
    /// `forwardByChannelBlocks`.
    static func applies(_ g: ConvGeometry) -> Bool {
        isCandidate(g) && 16 * g.o * g.c <= Conv2dTuning.winogradMaxWeightFloats
    }

    static func isCandidate(_ g: ConvGeometry) -> Bool {
        Conv2dTuning.winograd && g.kh == 3 && g.kw == 3 && g.stride == 1
            && ((g.oh + 1) / 2) * ((g.ow + 1) / 2) >= Conv2dTuning.winogradMinTiles
    }

    /// U[ξ][o][c] = (G w[o,c] Gᵀ)[ξ].
    /// `serial` when the caller already runs one worker per block.
    static func transformWeights(_ g: ConvGeometry, _ w: UnsafePointer<Float>, into u: UnsafeMutablePointer<Float>,
                                 serial: Bool = false) {
        let oc = g.o * g.c
        Parallel.forEach(oc, grain: serial ? oc : 1024) { r in
            for i in r {
                let k = w + 9 * i
                // G k (4x3) by columns, then (·) Gᵀ on each of its rows.
                let k0 = SIMD3<Float>(k[0], k[1], k[2]), k1 = SIMD3<Float>(k[3], k[4], k[5]), k2 = SIMD3<Float>(k[6], k[7], k[8])
                let rows = (k0, 0.5 * (k0 + k1 + k2), 0.5 * (k0 - k1 + k2), k2)
                func put(_ a: Int, _ t: SIMD3<Float>) {
                    u[(4 * a) * oc + i] = t[0]
                    u[(4 * a + 1) * oc + i] = 0.5 * (t[0] + t[1] + t[2])
                    u[(4 * a + 2) * oc + i] = 0.5 * (t[0] - t[1] + t[2])
                    u[(4 * a + 3) * oc + i] = t[2]
                }
                put(0, rows.0); put(1, rows.1); put(2, rows.2); put(3, rows.3)
            }
        }
    }

    /// Bands of tile rows (image, tile rows), balanced and at least one per thread.
    static func bands(_ g: ConvGeometry, tilesH: Int, tilesW: Int) -> [(img: Int, rows: Range<Int>)] {
        let perRow = 16 * (g.c + g.o) * tilesW
        let maxRows = max(1, Conv2dTuning.winogradBandFloats / max(perRow, 1))
        var perImage = (tilesH + maxRows - 1) / maxRows
        if g.n < Parallel.threads { perImage = (perImage + Parallel.threads - 1) / Parallel.threads * Parallel.threads }
        perImage = min(perImage, tilesH)
        var out: [(img: Int, rows: Range<Int>)] = []
        for img in 0..<g.n {
            for b in 0..<perImage { out.append((img, (tilesH * b / perImage)..<(tilesH * (b + 1) / perImage))) }
        }
        return out
    }

    static func forward(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                        _ bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        let tilesH = (g.oh + 1) / 2, tilesW = (g.ow + 1) / 2
        let u = UnsafeMutablePointer<Float>.allocate(capacity: 16 * g.o * g.c)
        defer { u.deallocate() }
        transformWeights(g, w, into: u)
        let bandList = bands(g, tilesH: tilesH, tilesW: tilesW)
        let maxTiles = (bandList.map(\.rows.count).max() ?? 0) * tilesW
        BLAS.singleThreaded {
            Parallel.forEach(bandList.count) { range in
                let v = UnsafeMutablePointer<Float>.allocate(capacity: 16 * g.c * maxTiles)
                // 8 floats of slack: the output transform reads whole vectors past the last tile.
                let m = UnsafeMutablePointer<Float>.allocate(capacity: 16 * g.o * maxTiles + 8)
                let padded = UnsafeMutablePointer<Float>.allocate(capacity: (2 * maxTiles / tilesW + 2) * 2 * (tilesW + 9))
                defer { v.deallocate(); m.deallocate(); padded.deallocate() }
                for (img, rows) in bandList[range] {
                    let bt = rows.count * tilesW
                    inputTransform(g, x + img * g.c * g.inPlane, rows: rows, tilesW: tilesW, padded: padded, into: v)
                    for xi in 0..<16 {
                        BLAS.sgemm(transA: false, transB: false, m: g.o, n: bt, k: g.c, a: u + xi * g.o * g.c, lda: g.c,
                                   b: v + xi * g.c * bt, ldb: bt, c: m + xi * g.o * bt, ldc: bt)
                    }
                    outputTransform(g, m, rows: rows, tilesW: tilesW, bias: bias, into: out + img * g.o * g.outPlane)
                }
            }
        }
    }

    /// Layers too wide for `applies` (1280x1280, 1920->640, ...) whose transformed input
    /// (16·in·tiles floats for the batch) fits in 32M floats.
    static func appliesByChannelBlocks(_ g: ConvGeometry) -> Bool {
        isCandidate(g) && 16 * g.c * g.n * ((g.oh + 1) / 2) * ((g.ow + 1) / 2) <= 32 << 20
    }

    /// Winograd for wide layers without their whole transformed weight (16·out·in floats,
    /// 105 MB at 1280x1280): the input of every image is transformed once, then each
    /// thread takes blocks of output channels, transforms just that block's weights and
    /// runs its 16 GEMMs over all tiles of the batch. 1280x1280 at 32x32: 0.15 s against
    /// im2col's 0.23 s.
    static func forwardByChannelBlocks(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                       _ bias: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        let tilesH = (g.oh + 1) / 2, tilesW = (g.ow + 1) / 2, perImage = tilesH * tilesW, total = g.n * perImage
        let v = UnsafeMutablePointer<Float>.allocate(capacity: 16 * g.c * total)
        defer { v.deallocate() }
        let chunks = max(1, min(g.c, Parallel.threads * 4))
        BLAS.singleThreaded {
            Parallel.forEach(g.n * chunks) { r in
                let padded = UnsafeMutablePointer<Float>.allocate(capacity: (2 * tilesH + 2) * 2 * (tilesW + 9))
                defer { padded.deallocate() }
                for item in r {
                    let img = item / chunks, part = item % chunks
                    inputTransform(g, x + img * g.c * g.inPlane, rows: 0..<tilesH, tilesW: tilesW, padded: padded,
                                   into: v + img * perImage, ld: total,
                                   channels: (g.c * part / chunks)..<(g.c * (part + 1) / chunks))
                }
            }
            let block = Conv2dTuning.winogradOutputBlock, blocks = (g.o + block - 1) / block
            Parallel.forEach(blocks) { r in
                let u = UnsafeMutablePointer<Float>.allocate(capacity: 16 * block * g.c)
                let m = UnsafeMutablePointer<Float>.allocate(capacity: 16 * block * total + 8)
                defer { u.deallocate(); m.deallocate() }
                for b in r {
                    let o0 = b * block, ob = min(block, g.o - o0)
                    let gb = ConvGeometry(n: g.n, c: g.c, h: g.h, w: g.w, o: ob, kh: 3, kw: 3, stride: 1, pad: g.pad,
                                          oh: g.oh, ow: g.ow)
                    transformWeights(gb, w + o0 * g.c * 9, into: u, serial: true)
                    for xi in 0..<16 {
                        BLAS.sgemm(transA: false, transB: false, m: ob, n: total, k: g.c, a: u + xi * ob * g.c, lda: g.c,
                                   b: v + xi * g.c * total, ldb: total, c: m + xi * ob * total, ldc: total)
                    }
                    for img in 0..<g.n {
                        outputTransform(gb, m + img * perImage, rows: 0..<tilesH, tilesW: tilesW, bias: bias.map { $0 + o0 },
                                        into: out + (img * g.o + o0) * g.outPlane, ld: total)
                    }
                }
            }
        }
    }

    /// V[ξ][c][t] = (Bᵀ d B)[ξ] for every tile t of the band, 8 tiles at a time. Each
    /// padded input row is split into even and odd columns first: tile tx reads columns
    /// 2tx..2tx+3 = even[tx], odd[tx], even[tx+1], odd[tx+1], so 8 neighbouring tiles
    /// load as contiguous vectors and store contiguously into each V[ξ][c].
    @inline(__always)
    static func inputTransform(_ g: ConvGeometry, _ x: UnsafePointer<Float>, rows: Range<Int>, tilesW: Int,
                               padded: UnsafeMutablePointer<Float>, into v: UnsafeMutablePointer<Float>,
                               ld: Int? = nil, channels: Range<Int>? = nil) {
        let bt = ld ?? rows.count * tilesW, ph = 2 * rows.count + 2
        let half = tilesW + 9, rowSize = 2 * half  // even half, then odd half, each with vector slack
        let stride = g.c * bt
        // Padded column q holds input column q - pad; even[k] = q 2k, odd[k] = q 2k + 1.
        func validRange(_ parity: Int) -> Range<Int> {
            let lo = max(0, (g.pad - parity + 1) / 2), t = g.w - 1 + g.pad - parity
            let hi = t < 0 ? 0 : min(half, t / 2 + 1)
            return lo..<max(lo, hi)
        }
        let evenValid = validRange(0), oddValid = validRange(1)
        for ch in channels ?? 0..<g.c {
            let plane = x + ch * g.inPlane
            for pr in 0..<ph {
                let even = padded + pr * rowSize, odd = even + half
                even.update(repeating: 0, count: rowSize)
                let ih = 2 * rows.lowerBound - g.pad + pr
                if ih < 0 || ih >= g.h { continue }
                let src = plane + ih * g.w - g.pad
                for k in evenValid { even[k] = src[2 * k] }
                for k in oddValid { odd[k] = src[2 * k + 1] }
            }
            let vc = v + ch * bt
            for ty in 0..<rows.count {
                let r0 = padded + 2 * ty * rowSize, r1 = r0 + rowSize, r2 = r1 + rowSize, r3 = r2 + rowSize
                var tx = 0
                while tx < tilesW {
                    let count = min(8, tilesW - tx)
                    @inline(__always) func load(_ r: UnsafeMutablePointer<Float>, _ j: Int) -> SIMD8<Float> {
                        UnsafeRawPointer(r + (j & 1) * half + tx + (j >> 1)).loadUnaligned(as: SIMD8<Float>.self)
                    }
                    @inline(__always) func store(_ xi: Int, _ value: SIMD8<Float>) {
                        let p = vc + xi * stride + ty * tilesW + tx
                        if count == 8 { UnsafeMutableRawPointer(p).storeBytes(of: value, as: SIMD8<Float>.self) }
                        else { for l in 0..<count { p[l] = value[l] } }
                    }
                    // Bᵀ d over rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), then the same over columns.
                    @inline(__always) func emit(_ a: Int, _ c0: SIMD8<Float>, _ c1: SIMD8<Float>, _ c2: SIMD8<Float>, _ c3: SIMD8<Float>) {
                        store(4 * a, c0 - c2); store(4 * a + 1, c1 + c2); store(4 * a + 2, c2 - c1); store(4 * a + 3, c1 - c3)
                    }
                    let d0 = (load(r0, 0), load(r0, 1), load(r0, 2), load(r0, 3))
                    let d1 = (load(r1, 0), load(r1, 1), load(r1, 2), load(r1, 3))
                    let d2 = (load(r2, 0), load(r2, 1), load(r2, 2), load(r2, 3))
                    let d3 = (load(r3, 0), load(r3, 1), load(r3, 2), load(r3, 3))
                    emit(0, d0.0 - d2.0, d0.1 - d2.1, d0.2 - d2.2, d0.3 - d2.3)
                    emit(1, d1.0 + d2.0, d1.1 + d2.1, d1.2 + d2.2, d1.3 + d2.3)
                    emit(2, d2.0 - d1.0, d2.1 - d1.1, d2.2 - d1.2, d2.3 - d1.3)
                    emit(3, d1.0 - d3.0, d1.1 - d3.1, d1.2 - d3.2, d1.3 - d3.3)
                    tx += 8
                }
            }
        }
    }

    /// out tile = Aᵀ M A (+ bias), 8 tiles at a time, clipped at odd output edges.
    @inline(__always)
    static func outputTransform(_ g: ConvGeometry, _ m: UnsafePointer<Float>, rows: Range<Int>, tilesW: Int,
                                bias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>, ld: Int? = nil) {
        let bt = ld ?? rows.count * tilesW, stride = g.o * bt
        for oc in 0..<g.o {
            let b = SIMD8<Float>(repeating: bias?[oc] ?? 0)
            let mo = m + oc * bt, plane = out + oc * g.outPlane
            for ty in 0..<rows.count {
                let oy = 2 * (rows.lowerBound + ty)
                let row0 = plane + oy * g.ow, row1 = row0 + g.ow
                let hasRow1 = oy + 1 < g.oh
                var tx = 0
                while tx < tilesW {
                    let p = mo + ty * tilesW + tx
                    @inline(__always) func load(_ xi: Int) -> SIMD8<Float> {
                        UnsafeRawPointer(p + xi * stride).loadUnaligned(as: SIMD8<Float>.self)
                    }
                    // Aᵀ M over rows (m0 + m1 + m2, m1 - m2 - m3), then the same over columns.
                    let m0 = (load(0), load(1), load(2), load(3)), m1 = (load(4), load(5), load(6), load(7))
                    let m2 = (load(8), load(9), load(10), load(11)), m3 = (load(12), load(13), load(14), load(15))
                    let t0 = (m0.0 + m1.0 + m2.0, m0.1 + m1.1 + m2.1, m0.2 + m1.2 + m2.2, m0.3 + m1.3 + m2.3)
                    let t1 = (m1.0 - m2.0 - m3.0, m1.1 - m2.1 - m3.1, m1.2 - m2.2 - m3.2, m1.3 - m2.3 - m3.3)
                    let y00 = t0.0 + t0.1 + t0.2 + b, y01 = t0.1 - t0.2 - t0.3 + b
                    let y10 = t1.0 + t1.1 + t1.2 + b, y11 = t1.1 - t1.2 - t1.3 + b
                    let ox = 2 * tx
                    if ox + 16 <= g.ow {
                        UnsafeMutableRawPointer(row0 + ox).storeBytes(of: interleave(y00, y01), as: SIMD16<Float>.self)
                        if hasRow1 { UnsafeMutableRawPointer(row1 + ox).storeBytes(of: interleave(y10, y11), as: SIMD16<Float>.self) }
                    } else {
                        for l in 0..<min(8, tilesW - tx) {
                            let c = ox + 2 * l
                            row0[c] = y00[l]
                            if c + 1 < g.ow { row0[c + 1] = y01[l] }
                            if hasRow1 {
                                row1[c] = y10[l]
                                if c + 1 < g.ow { row1[c + 1] = y11[l] }
                            }
                        }
                    }
                    tx += 8
                }
            }
        }
    }

    /// dW = Σ_tiles Gᵀ[(A dY Aᵀ) ⊙ (Bᵀ d B)]G: per position ξ, the products of the
    /// transformed output gradient and transformed input summed over tiles are one
    /// GEMM (k = tiles); each thread sums its bands, the sums are added in band order.
    static func weightGrad(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ gOut: UnsafePointer<Float>,
                           _ gw: UnsafeMutablePointer<Float>) {
        let tilesH = (g.oh + 1) / 2, tilesW = (g.ow + 1) / 2
        let oc = g.o * g.c
        let bandList = bands(g, tilesH: tilesH, tilesW: tilesW)
        let maxTiles = (bandList.map(\.rows.count).max() ?? 0) * tilesW
        let sums = UnsafeMutableBufferPointer<UnsafeMutablePointer<Float>?>.allocate(capacity: bandList.count)
        sums.initialize(repeating: nil)
        defer {
            for p in sums { p?.deallocate() }
            sums.deallocate()
        }
        BLAS.singleThreaded {
            Parallel.forEach(bandList.count) { range in
                let du = UnsafeMutablePointer<Float>.allocate(capacity: 16 * oc)
                sums[range.lowerBound] = du
                let v = UnsafeMutablePointer<Float>.allocate(capacity: 16 * g.c * maxTiles)
                let dm = UnsafeMutablePointer<Float>.allocate(capacity: 16 * g.o * maxTiles)
                let padded = UnsafeMutablePointer<Float>.allocate(capacity: (2 * maxTiles / tilesW + 2) * 2 * (tilesW + 9))
                defer { v.deallocate(); dm.deallocate(); padded.deallocate() }
                var first = true
                for (img, rows) in bandList[range] {
                    let bt = rows.count * tilesW
                    inputTransform(g, x + img * g.c * g.inPlane, rows: rows, tilesW: tilesW, padded: padded, into: v)
                    gradOutputTransform(g, gOut + img * g.o * g.outPlane, rows: rows, tilesW: tilesW, into: dm)
                    for xi in 0..<16 {
                        BLAS.sgemm(transA: false, transB: true, m: g.o, n: g.c, k: bt, a: dm + xi * g.o * bt, lda: bt,
                                   b: v + xi * g.c * bt, ldb: bt, beta: first ? 0 : 1, c: du + xi * oc, ldc: g.c)
                    }
                    first = false
                }
            }
        }
        let parts = sums.compactMap { $0 }
        Parallel.forEach(oc, grain: 1024) { r in
            for i in r {
                var u0 = SIMD4<Float>(), u1 = SIMD4<Float>(), u2 = SIMD4<Float>(), u3 = SIMD4<Float>()
                for p in parts {
                    @inline(__always) func row(_ a: Int) -> SIMD4<Float> {
                        SIMD4(p[(4 * a) * oc + i], p[(4 * a + 1) * oc + i], p[(4 * a + 2) * oc + i], p[(4 * a + 3) * oc + i])
                    }
                    u0 += row(0); u1 += row(1); u2 += row(2); u3 += row(3)
                }
                // Gᵀ U G: rows u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3, then the same over columns.
                let k = gw + 9 * i
                @inline(__always) func put(_ r: Int, _ q: SIMD4<Float>) {
                    k[3 * r] = q[0] + 0.5 * (q[1] + q[2])
                    k[3 * r + 1] = 0.5 * (q[1] - q[2])
                    k[3 * r + 2] = 0.5 * (q[1] + q[2]) + q[3]
                }
                put(0, u0 + 0.5 * (u1 + u2)); put(1, 0.5 * (u1 - u2)); put(2, 0.5 * (u1 + u2) + u3)
            }
        }
    }

    /// dM[ξ][o][t] = (A dY Aᵀ)[ξ] for the 2x2 output-gradient tile dY (zero past odd edges).
    @inline(__always)
    static func gradOutputTransform(_ g: ConvGeometry, _ gOut: UnsafePointer<Float>, rows: Range<Int>, tilesW: Int,
                                    into dm: UnsafeMutablePointer<Float>) {
        let bt = rows.count * tilesW, stride = g.o * bt
        for oc in 0..<g.o {
            let plane = gOut + oc * g.outPlane, dmo = dm + oc * bt
            for ty in 0..<rows.count {
                let oy = 2 * (rows.lowerBound + ty)
                let row0 = plane + oy * g.ow, row1 = row0 + g.ow
                let hasRow1 = oy + 1 < g.oh
                var tx = 0
                while tx < tilesW {
                    let count = min(8, tilesW - tx), ox = 2 * tx
                    var a = SIMD16<Float>(), b = SIMD16<Float>()  // rows 0 and 1, 8 tiles of 2 columns
                    if ox + 16 <= g.ow {
                        a = UnsafeRawPointer(row0 + ox).loadUnaligned(as: SIMD16<Float>.self)
                        if hasRow1 { b = UnsafeRawPointer(row1 + ox).loadUnaligned(as: SIMD16<Float>.self) }
                    } else {
                        for l in 0..<min(16, g.ow - ox) {
                            a[l] = row0[ox + l]
                            if hasRow1 { b[l] = row1[ox + l] }
                        }
                    }
                    let y00 = a.evenHalf, y01 = a.oddHalf, y10 = b.evenHalf, y11 = b.oddHalf
                    let p = dmo + ty * tilesW + tx
                    @inline(__always) func store(_ xi: Int, _ value: SIMD8<Float>) {
                        if count == 8 { UnsafeMutableRawPointer(p + xi * stride).storeBytes(of: value, as: SIMD8<Float>.self) }
                        else { for l in 0..<count { p[xi * stride + l] = value[l] } }
                    }
                    // A dY over rows (y0, y0 + y1, y0 - y1, -y1), then the same over columns.
                    @inline(__always) func emit(_ r: Int, _ c0: SIMD8<Float>, _ c1: SIMD8<Float>) {
                        store(4 * r, c0); store(4 * r + 1, c0 + c1); store(4 * r + 2, c0 - c1); store(4 * r + 3, -c1)
                    }
                    emit(0, y00, y01)
                    emit(1, y00 + y10, y01 + y11)
                    emit(2, y00 - y10, y01 - y11)
                    emit(3, -y10, -y11)
                    tx += 8
                }
            }
        }
    }

    @inline(__always)
    static func interleave(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD16<Float> {
        SIMD16(a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3], a[4], b[4], a[5], b[5], a[6], b[6], a[7], b[7])
    }
}
