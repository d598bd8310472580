import Foundation

extension Winograd {
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
        forEachTileRun(g, rows: rows, tilesW: tilesW, tilesPerChannel: bt) { _, tile, row, hasRow1, tx in
            let row0 = gOut + row, row1 = row0 + g.ow
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
            let p = dm + tile
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
        }
    }
}
