import CKernels
import Foundation

/// Reductions for the normalisation kernels. Blocks of 4096 floats are summed in 16
/// float lanes and the block sums added in Double, so error stays small for planes of
/// millions of values (VAE at 1024 px).
enum NormKernels {
    static let block = 4096

    /// Σ (x - shift) and Σ (x - shift)² over `n` floats. Shifting by a sample value keeps
    /// the variance free of cancellation when |mean| ≫ std.
    @inline(__always)
    static func shiftedMoments(_ p: UnsafePointer<Float>, _ n: Int, shift: Float) -> (Double, Double) {
        var s1 = 0.0, s2 = 0.0
        var start = 0
        let k = SIMD16<Float>(repeating: shift)
        while start < n {
            let end = min(n, start + block)
            var a1 = SIMD16<Float>(repeating: 0), a2 = SIMD16<Float>(repeating: 0)
            var i = start
            while i + 16 <= end {
                let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self) - k
                a1 += v
                a2 += v * v
                i += 16
            }
            var t1 = a1.sum(), t2 = a2.sum()
            while i < end { let v = p[i] - shift; t1 += v; t2 += v * v; i += 1 }
            s1 += Double(t1); s2 += Double(t2)
            start = end
        }
        return (s1, s2)
    }

    /// Σ g and Σ g·x over `n` floats.
    @inline(__always)
    static func gradSums(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        var s1 = 0.0, s2 = 0.0
        var start = 0
        while start < n {
            let end = min(n, start + block)
            var a1 = SIMD16<Float>(repeating: 0), a2 = SIMD16<Float>(repeating: 0)
            var i = start
            while i + 16 <= end {
                let gv = UnsafeRawPointer(g + i).loadUnaligned(as: SIMD16<Float>.self)
                let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
                a1 += gv
                a2 += gv * xv
                i += 16
            }
            var t1 = a1.sum(), t2 = a2.sum()
            while i < end { t1 += g[i]; t2 += g[i] * x[i]; i += 1 }
            s1 += Double(t1); s2 += Double(t2)
            start = end
        }
        return (s1, s2)
    }

    /// Mean and 1/√(var + eps) (biased variance, as PyTorch) of `n` floats.
    @inline(__always)
    static func stats(_ p: UnsafePointer<Float>, _ n: Int, eps: Float) -> (mean: Float, rstd: Float) {
        let (s1, s2) = shiftedMoments(p, n, shift: p[0])
        let m = s1 / Double(n)
        let v = max(0, s2 / Double(n) - m * m)
        return (Float(Double(p[0]) + m), Float(1 / (v + Double(eps)).squareRoot()))
    }

    /// y = a·x + b over `n` floats, then SiLU in place when `silu`.
    @inline(__always)
    static func affine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                       _ a: Float, _ b: Float, silu: Bool, scratch: UnsafeMutablePointer<Float>) {
        if !silu {
            for i in 0..<n { y[i] = x[i] * a + b }
            return
        }
        var start = 0
        while start < n {
            let m = min(block, n - start)
            let xs = x + start, ys = y + start
            for i in 0..<m { ys[i] = xs[i] * a + b }
            kb_sigmoid(ys, scratch, m)
            for i in 0..<m { ys[i] *= scratch[i] }
            start += m
        }
    }

    /// dz from dy for z = a·x + b: dy itself, or through SiLU (dz = dy·σ(z)·(1 + z·(1 - σ(z)))).
    /// Writes dz into `dz` (may alias `dy`).
    @inline(__always)
    static func siluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dz: UnsafeMutablePointer<Float>,
                             _ n: Int, _ a: Float, _ b: Float, scratch: UnsafeMutablePointer<Float>) {
        let z = scratch, s = scratch + block
        var start = 0
        while start < n {
            let m = min(block, n - start)
            let xs = x + start, dys = dy + start, dzs = dz + start
            for i in 0..<m { z[i] = xs[i] * a + b }
            kb_sigmoid(z, s, m)
            for i in 0..<m { dzs[i] = dys[i] * s[i] * (1 + z[i] * (1 - s[i])) }
            start += m
        }
    }
}

extension Tensor {
    /// Group normalisation over [N, C, *], as `torch.nn.functional.group_norm`: each
    /// of `groups` channel groups per sample is normalised to zero mean and unit
    /// (biased) variance, then scaled by `weight` [C] and shifted by `bias` [C].
    public func groupNorm(groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        groupNormCore(groups: groups, weight: weight, bias: bias, eps: eps, silu: false)
    }

    /// `silu(groupNorm(x))` in one pass (the U-Net's resnet blocks always pair them).
    /// Saves only the input and the group statistics for backward.
    public func groupNormSiLU(groups: Int, weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        groupNormCore(groups: groups, weight: weight, bias: bias, eps: eps, silu: true)
    }

    private func groupNormCore(groups: Int, weight: Tensor?, bias: Tensor?, eps: Float, silu: Bool) -> Tensor {
        boundaryCheck(rank >= 2, "groupNorm: input must be [N, C, ...], got \(shape)")
        let n = shape[0], c = shape[1]
        boundaryCheck(groups > 0 && c % groups == 0, "groupNorm: \(c) channels do not split into \(groups) groups")
        if let weight { boundaryCheck(weight.shape == [c], "groupNorm: weight \(weight.shape) for \(c) channels") }
        if let bias { boundaryCheck(bias.shape == [c], "groupNorm: bias \(bias.shape) for \(c) channels") }
        let x = contiguous(), w = weight?.contiguous(), b = bias?.contiguous()
        let plane = c == 0 || n == 0 ? 0 : count / (n * c)
        let cg = c / groups, groupSize = cg * plane
        let out = Tensor(empty: shape)
        let stats = Tensor(empty: [n * groups, 2])  // mean, rstd per (sample, group)
        let xp = x.data, op = out.data, sp = stats.data, wp = w?.data, bp = b?.data
        let block = NormKernels.block
        Parallel.forEach(n * groups, grain: max(1, 16384 / max(groupSize, 1))) { range in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block)
            defer { scratch.deallocate() }
            for ng in range {
                let base = ng * groupSize
                let (mean, rstd) = NormKernels.stats(xp + base, groupSize, eps: eps)
                sp[2 * ng] = mean; sp[2 * ng + 1] = rstd
                for j in 0..<cg {
                    let ch = (ng % groups) * cg + j
                    let a = rstd * (wp?[ch] ?? 1), shift = (bp?[ch] ?? 0) - mean * a
                    let off = base + j * plane
                    NormKernels.affine(xp + off, op + off, plane, a, shift, silu: silu, scratch: scratch)
                }
            }
        }

        var inputs = [x]
        if let w { inputs.append(w) }
        if let b { inputs.append(b) }
        return record(out, inputs, silu ? "groupNormSiLU" : "groupNorm") { grad, needs in
            let gy = grad.contiguous()
            let gx = Tensor(empty: x.shape)  // holds dz first, then dx
            // Per (sample, channel): Σ dz·x̂ and Σ dz, summed over samples afterwards.
            let partial = Tensor(empty: [n * c, 2])
            // Captures the tensors (not just their pointers) so their storage outlives forward.
            let gyp = gy.data, gxp = gx.data, pp = partial.data, sp = stats.data, xp = x.data
            let wp = w?.data, bp = b?.data
            Parallel.forEach(n * groups, grain: max(1, 8192 / max(groupSize, 1))) { range in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block)
                defer { scratch.deallocate() }
                for ng in range {
                    let base = ng * groupSize, g = ng % groups, sample = ng / groups
                    let mean = sp[2 * ng], rstd = sp[2 * ng + 1]
                    var sumDxhat = 0.0, sumDxhatXhat = 0.0
                    for j in 0..<cg {
                        let ch = g * cg + j, off = base + j * plane
                        let wc = wp?[ch] ?? 1
                        if silu {
                            let a = rstd * wc, shift = (bp?[ch] ?? 0) - mean * a
                            NormKernels.siluBackward(xp + off, gyp + off, gxp + off, plane, a, shift, scratch: scratch)
                        } else {
                            (gxp + off).update(from: gyp + off, count: plane)
                        }
                        let (sdz, sdzx) = NormKernels.gradSums(gxp + off, xp + off, plane)
                        let sdzXhat = Double(rstd) * (sdzx - Double(mean) * sdz)
                        pp[2 * (sample * c + ch)] = Float(sdzXhat)
                        pp[2 * (sample * c + ch) + 1] = Float(sdz)
                        sumDxhat += Double(wc) * sdz
                        sumDxhatXhat += Double(wc) * sdzXhat
                    }
                    guard needs[0] else { continue }
                    // dx = rstd·(w·dz - mean(w·dz) - x̂·mean(w·dz·x̂)) = A_c·dz + B·x + C
                    let m1 = sumDxhat / Double(groupSize), m2 = sumDxhatXhat / Double(groupSize)
                    let r = Double(rstd)
                    let bx = Float(-r * r * m2), c0 = Float(-r * m1 + Double(mean) * r * r * m2)
                    for j in 0..<cg {
                        let ch = g * cg + j, off = base + j * plane
                        let a = rstd * (wp?[ch] ?? 1)
                        let d = gxp + off, xs = xp + off
                        for i in 0..<plane { d[i] = d[i] * a + xs[i] * bx + c0 }
                    }
                }
            }
            var grads: [Tensor?] = [needs[0] ? gx : nil]
            func reduce(_ k: Int) -> Tensor {
                let t = Tensor(empty: [c]), tp = t.data
                for ch in 0..<c {
                    var acc = 0.0
                    for s in 0..<n { acc += Double(pp[2 * (s * c + ch) + k]) }
                    tp[ch] = Float(acc)
                }
                return t
            }
            if w != nil { grads.append(needs[grads.count] ? reduce(0) : nil) }
            if b != nil { grads.append(needs[grads.count] ? reduce(1) : nil) }
            return grads
        }
    }

    /// Layer normalisation over the last dimension, as
    /// `torch.nn.functional.layer_norm(x, [D], weight, bias, eps)`; weight and bias are [D].
    public func layerNorm(weight: Tensor?, bias: Tensor?, eps: Float) -> Tensor {
        boundaryCheck(rank >= 1, "layerNorm: needs at least one dimension")
        let d = shape[rank - 1]
        if let weight { boundaryCheck(weight.shape == [d], "layerNorm: weight \(weight.shape) for last dim \(d)") }
        if let bias { boundaryCheck(bias.shape == [d], "layerNorm: bias \(bias.shape) for last dim \(d)") }
        let x = contiguous(), w = weight?.contiguous(), b = bias?.contiguous()
        let rows = d == 0 ? 0 : count / d
        let out = Tensor(empty: shape)
        let stats = Tensor(empty: [rows, 2])
        let xp = x.data, op = out.data, sp = stats.data, wp = w?.data, bp = b?.data
        Parallel.forEach(rows, grain: max(1, 8192 / max(d, 1))) { range in
            for r in range {
                let xs = xp + r * d, ys = op + r * d
                let (mean, rstd) = NormKernels.stats(xs, d, eps: eps)
                sp[2 * r] = mean; sp[2 * r + 1] = rstd
                switch (wp, bp) {
                case let (wv?, bv?): for i in 0..<d { ys[i] = (xs[i] - mean) * rstd * wv[i] + bv[i] }
                case let (wv?, nil): for i in 0..<d { ys[i] = (xs[i] - mean) * rstd * wv[i] }
                case let (nil, bv?): for i in 0..<d { ys[i] = (xs[i] - mean) * rstd + bv[i] }
                case (nil, nil): for i in 0..<d { ys[i] = (xs[i] - mean) * rstd }
                }
            }
        }

        var inputs = [x]
        if let w { inputs.append(w) }
        if let b { inputs.append(b) }
        return record(out, inputs, "layerNorm") { grad, needs in
            let gy = grad.contiguous()
            let gyp = gy.data, sp = stats.data, xp = x.data, wp = w?.data
            // Weight and bias gradients: partial sums per fixed block of rows (the same
            // blocks for any thread count, so results are deterministic), then summed.
            let blockRows = 64, blocks = (rows + blockRows - 1) / blockRows
            let needParams = (w != nil && needs[1]) || (b != nil && needs[inputs.count - 1])
            let partial = needParams ? Tensor.zeros([blocks, 2, d]) : nil
            let gx = needs[0] ? Tensor(empty: x.shape) : nil
            let pp = partial?.data, gxp = gx?.data
            Parallel.forEach(blocks, grain: 1) { range in
                for blk in range {
                    for r in (blk * blockRows)..<min(rows, (blk + 1) * blockRows) {
                        let xs = xp + r * d, gs = gyp + r * d
                        let mean = sp[2 * r], rstd = sp[2 * r + 1]
                        if let pp {
                            let pw = pp + blk * 2 * d, pb = pw + d
                            for i in 0..<d { pw[i] += gs[i] * (xs[i] - mean) * rstd; pb[i] += gs[i] }
                        }
                        guard let gxp else { continue }
                        // dx = rstd·(ĝ - mean(ĝ) - x̂·mean(ĝ·x̂)) with ĝ = dy·w
                        var s1: Float = 0, s2: Float = 0
                        let dst = gxp + r * d
                        for i in 0..<d {
                            let gh = gs[i] * (wp?[i] ?? 1)
                            dst[i] = gh
                            s1 += gh
                            s2 += gh * (xs[i] - mean)
                        }
                        let m1 = s1 / Float(d), m2 = s2 * rstd / Float(d)
                        for i in 0..<d { dst[i] = rstd * (dst[i] - m1 - (xs[i] - mean) * rstd * m2) }
                    }
                }
            }
            var grads: [Tensor?] = [gx]
            func reduce(_ k: Int) -> Tensor {
                let t = Tensor(empty: [d]), tp = t.data
                Parallel.forEach(d, grain: 256) { range in
                    for i in range {
                        var acc = 0.0
                        for blk in 0..<blocks { acc += Double(pp![(blk * 2 + k) * d + i]) }
                        tp[i] = Float(acc)
                    }
                }
                return t
            }
            if w != nil { grads.append(needs[grads.count] ? reduce(0) : nil) }
            if b != nil { grads.append(needs[grads.count] ? reduce(1) : nil) }
            return grads
        }
    }
}
