import CKernels

/// Row kernels shared by softmax and attention. Rows are contiguous float runs.
enum RowMath {
    @inline(__always)
    static func max(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m16 = SIMD16<Float>(repeating: -.infinity)
        var i = 0
        while i + 16 <= n {
            // A compare-and-select: `pointwiseMax` is not vectorised (it orders NaNs).
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            m16.replace(with: v, where: v .> m16)
            i += 16
        }
        // Fold lanes by halves: `SIMD.max()` is a scalar loop that checks for NaN.
        var m8 = m16.highHalf
        m8.replace(with: m16.lowHalf, where: m16.lowHalf .> m8)
        var m4 = m8.highHalf
        m4.replace(with: m8.lowHalf, where: m8.lowHalf .> m4)
        var m = Swift.max(Swift.max(m4[0], m4[1]), Swift.max(m4[2], m4[3]))
        while i < n { m = Swift.max(m, x[i]); i += 1 }
        return m
    }

    /// Σ term(i) for i < n with 16 independent lanes (Swift does not reassociate a scalar
    /// loop): `lanes(i)` gives terms i..<i+16, `term(i)` one term of the ragged tail.
    @inline(__always)
    static func laneSum(_ n: Int, _ lanes: (Int) -> SIMD16<Float>, _ term: (Int) -> Float) -> Float {
        var s16 = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            s16 += lanes(i)
            i += 16
        }
        var s = s16.sum()
        while i < n { s += term(i); i += 1 }
        return s
    }

    @inline(__always)
    static func load16(_ x: UnsafePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(x).loadUnaligned(as: SIMD16<Float>.self)
    }

    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        laneSum(n, { load16(x + $0) }, { x[$0] })
    }

    @inline(__always)
    static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
        laneSum(n, { load16(x + $0) * load16(y + $0) }, { x[$0] * y[$0] })
    }

    /// y[i] = exp(x[i] - shift) (x and y may alias); returns Σ y.
    @inline(__always)
    static func expShifted(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        let s16 = SIMD16<Float>(repeating: shift)
        var i = 0
        while i + 16 <= n {
            UnsafeMutableRawPointer(y + i).storeBytes(
                of: UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self) - s16, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { y[i] = x[i] - shift; i += 1 }
        kb_exp(y, y, n)
        return sum(y, n)
    }

    /// x[i] = exp(x[i]); returns Σ x.
    @inline(__always)
    static func exp(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> Float {
        kb_exp(x, x, n)
        return sum(x, n)
    }

    /// x[i] *= y[i].
    @inline(__always)
    static func multiply(_ x: UnsafeMutablePointer<Float>, by y: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 16 <= n {
            let p = UnsafeMutableRawPointer(x + i)
            p.storeBytes(of: p.loadUnaligned(as: SIMD16<Float>.self) * UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self),
                         as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { x[i] *= y[i]; i += 1 }
    }

    @inline(__always)
    static func scale(_ x: UnsafeMutablePointer<Float>, _ n: Int, by a: Float) {
        let a16 = SIMD16<Float>(repeating: a)
        var i = 0
        while i + 16 <= n {
            let p = UnsafeMutableRawPointer(x + i)
            p.storeBytes(of: p.loadUnaligned(as: SIMD16<Float>.self) * a16, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { x[i] *= a; i += 1 }
    }
}

extension Tensor {
    /// Softmax along `dim`, as `torch.softmax`: exp(x - max) / Σ exp(x - max), so large
    /// inputs do not overflow. Rows of -inf give NaN, as in torch.
    public func softmax(dim: Int = -1) -> Tensor {
        let d = normalize(dim)
        let x = contiguous()
        let n = shape[d]
        let inner = shape[(d + 1)...].reduce(1, *)
        let outer = shape[..<d].reduce(1, *)
        let out = Tensor(empty: shape)
        if count > 0 { Tensor.softmaxForward(x.data, out.data, outer: outer, n: n, inner: inner) }
        let y = out.detached()  // the closure must not own `out` (a reference cycle)
        return record(out, [x], "softmax") { g, _ in
            let gc = g.contiguous()
            let gx = Tensor(empty: y.shape)
            if y.count > 0 { Tensor.softmaxBackward(y.data, gc.data, gx.data, outer: outer, n: n, inner: inner) }
            return [gx]
        }
    }

    /// Softmax over `n` elements spaced `inner` apart, for each of `outer × inner` rows.
    static func softmaxForward(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                               outer: Int, n: Int, inner: Int) {
        if inner == 1 {
            Parallel.forEach(outer, grain: max(1, 16384 / max(n, 1))) { rows in
                for r in rows {
                    let xr = x + r * n, yr = y + r * n
                    let s = RowMath.expShifted(xr, yr, n, shift: RowMath.max(xr, n))
                    RowMath.scale(yr, n, by: 1 / s)
                }
            }
            return
        }
        // Softmax over a middle dim: walk the n planes of `inner` values, keeping one
        // running max and sum per column, so every pass reads memory in order.
        Parallel.forEach(outer, grain: max(1, 16384 / max(n * inner, 1))) { blocks in
            let acc = UnsafeMutablePointer<Float>.allocate(capacity: 2 * inner)
            defer { acc.deallocate() }
            let m = acc, s = acc + inner
            for o in blocks {
                let xb = x + o * n * inner, yb = y + o * n * inner
                m.update(from: xb, count: inner)
                for j in 1..<Swift.max(n, 1) { for i in 0..<inner { m[i] = Swift.max(m[i], xb[j * inner + i]) } }
                for j in 0..<n { for i in 0..<inner { yb[j * inner + i] = xb[j * inner + i] - m[i] } }
                kb_exp(yb, yb, n * inner)
                s.update(repeating: 0, count: inner)
                for j in 0..<n { for i in 0..<inner { s[i] += yb[j * inner + i] } }
                for i in 0..<inner { s[i] = 1 / s[i] }
                for j in 0..<n { for i in 0..<inner { yb[j * inner + i] *= s[i] } }
            }
        }
    }

    /// dx = y ∘ (dy − Σ dy ∘ y) along each row.
    static func softmaxBackward(_ y: UnsafeMutablePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                                _ dx: UnsafeMutablePointer<Float>, outer: Int, n: Int, inner: Int) {
        if inner == 1 {
            Parallel.forEach(outer, grain: max(1, 16384 / max(n, 1))) { rows in
                for r in rows {
                    let yr = y + r * n, gr = dy + r * n, dr = dx + r * n
                    let c = RowMath.dot(yr, gr, n)
                    for j in 0..<n { dr[j] = yr[j] * (gr[j] - c) }
                }
            }
            return
        }
        Parallel.forEach(outer, grain: max(1, 16384 / max(n * inner, 1))) { blocks in
            let c = UnsafeMutablePointer<Float>.allocate(capacity: inner)
            defer { c.deallocate() }
            for o in blocks {
                let base = o * n * inner
                let yb = y + base, gb = dy + base, db = dx + base
                c.update(repeating: 0, count: inner)
                for j in 0..<n { for i in 0..<inner { c[i] += yb[j * inner + i] * gb[j * inner + i] } }
                for j in 0..<n { for i in 0..<inner { db[j * inner + i] = yb[j * inner + i] * (gb[j * inner + i] - c[i]) } }
            }
        }
    }
}
