import Foundation

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
