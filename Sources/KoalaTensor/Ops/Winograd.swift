import Foundation

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
        forEachTileRun(g, rows: rows, tilesW: tilesW, tilesPerChannel: bt) { oc, tile, row, hasRow1, tx in
            let b = SIMD8<Float>(repeating: bias?[oc] ?? 0)
            let p = m + tile, row0 = out + row, row1 = row0 + g.ow
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
        }
    }

    /// The walk both output-side transforms take over the 2x2 output tiles of tile rows
    /// `rows`, `tilesW` tiles wide, 8 tiles at a time, channel by channel. `body` gets the
    /// output channel, the offset of the run's first tile in the transformed tiles (channel
    /// `oc` starts at `oc · tilesPerChannel`, its tile rows `tilesW` apart), the offset of the
    /// run's first output row in the output (the second row, `g.ow` further, exists when
    /// `hasRow1`), and the run's first tile column; a run may reach past `tilesW`.
    @inline(__always)
    static func forEachTileRun(_ g: ConvGeometry, rows: Range<Int>, tilesW: Int, tilesPerChannel: Int,
                               _ body: (_ oc: Int, _ tile: Int, _ row: Int, _ hasRow1: Bool, _ tx: Int) -> Void) {
        for oc in 0..<g.o {
            for ty in 0..<rows.count {
                let oy = 2 * (rows.lowerBound + ty)
                let row = oc * g.outPlane + oy * g.ow, hasRow1 = oy + 1 < g.oh
                var tx = 0
                while tx < tilesW {
                    body(oc, oc * tilesPerChannel + ty * tilesW + tx, row, hasRow1, tx)
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
