import Foundation

extension Tensor {
    /// Nearest-neighbour 2x upsampling of an NCHW tensor, as
    /// `torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")`: every value
    /// becomes a 2x2 block. Backward sums each block.
    public func upsampleNearest2x() -> Tensor {
        boundaryCheck(rank == 4, "upsampleNearest2x: input must be NCHW, got shape \(shape)")
        let h = shape[2], w = shape[3]
        let x = contiguous()
        let out = Tensor(empty: [shape[0], shape[1], 2 * h, 2 * w])
        let rows = shape[0] * shape[1] * h
        let src = x.data, dst = out.data
        Parallel.forEach(rows, grain: max(1, 8192 / max(w, 1))) { range in
            for r in range {
                let s = src + r * w, d0 = dst + 4 * r * w, d1 = d0 + 2 * w
                for j in 0..<w { d0[2 * j] = s[j]; d0[2 * j + 1] = s[j] }
                d1.update(from: d0, count: 2 * w)
            }
        }
        return record(out, [x], "upsampleNearest2x") { grad, _ in
            let g = grad.contiguous()
            let gx = Tensor(empty: x.shape)
            let gs = g.data, gd = gx.data
            Parallel.forEach(rows, grain: max(1, 8192 / max(w, 1))) { range in
                for r in range {
                    let s0 = gs + 4 * r * w, s1 = s0 + 2 * w, d = gd + r * w
                    for j in 0..<w { d[j] = (s0[2 * j] + s0[2 * j + 1]) + (s1[2 * j] + s1[2 * j + 1]) }
                }
            }
            return [gx]
        }
    }
}
