import Foundation

extension Tensor {
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
}
