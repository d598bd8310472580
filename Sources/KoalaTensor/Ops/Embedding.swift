import Foundation

extension Tensor {
    /// Looks up rows of `weight` (`[vocab, dim]`), as `torch.nn.functional.embedding`.
    /// `idsShape` (default `[ids.count]`) shapes the ids; the result is
    /// `idsShape + [dim]`. Backward adds each output row's gradient into the weight row
    /// it came from (repeated ids accumulate).
    public static func embedding(_ ids: [Int], idsShape: [Int]? = nil, weight: Tensor) -> Tensor {
        boundaryCheck(weight.rank == 2, "embedding weight must be [vocab, dim], got \(weight.shape)")
        let lead = idsShape ?? [ids.count]
        boundaryCheck(lead.reduce(1, *) == ids.count, "embedding: idsShape \(lead) does not hold \(ids.count) ids")
        let vocab = weight.shape[0], dim = weight.shape[1]
        // fatalError, not preconditionFailure: -Ounchecked would treat the latter as unreachable.
        if let bad = ids.first(where: { $0 < 0 || $0 >= vocab }) {
            fatalError("embedding: id \(bad) is outside the vocabulary 0..<\(vocab)")
        }
        let w = weight.contiguous()
        let out = Tensor(empty: lead + [dim])
        let src = UnsafePointer(w.data), dst = out.data
        ids.withUnsafeBufferPointer { idp in
            Parallel.forEach(ids.count, grain: max(1, elementwiseGrain / max(dim, 1))) { r in
                for i in r { (dst + i * dim).update(from: src + idp[i] * dim, count: dim) }
            }
        }
        return record(out, [w], "embedding") { g, _ in
            let gc = g.contiguous()
            let gw = Tensor.zeros([vocab, dim])
            let gp = UnsafePointer(gc.data), gwp = gw.data
            // Columns in parallel so that repeated ids never race; ids in order within
            // each column range (deterministic).
            Parallel.forEach(dim, grain: max(8, elementwiseGrain / max(ids.count, 1))) { cols in
                for (i, id) in ids.enumerated() {
                    let row = gwp + id * dim, grow = gp + i * dim
                    for c in cols { row[c] += grow[c] }
                }
            }
            return [gw]
        }
    }

    /// Sinusoidal timestep embeddings `[timesteps.count, dim]`, equal to diffusers'
    /// `get_timestep_embedding`: frequencies
    /// `exp(-log(maxPeriod) · i / (dim/2 - downscaleFreqShift))`, `[sin, cos]` halves
    /// (`[cos, sin]` when `flipSinToCos`), a zero column appended when `dim` is odd.
    ///
    /// Not differentiable: timesteps are constants of the diffusion schedule, so the
    /// result records no autograd history.
    public static func timestepEmbedding(_ timesteps: [Float], dim: Int, flipSinToCos: Bool,
                                         downscaleFreqShift: Float, scale: Float = 1,
                                         maxPeriod: Float = 10000) -> Tensor {
        boundaryCheck(dim > 0, "timestep embedding dim must be positive, got \(dim)")
        let half = dim / 2
        // Float32 at each step, in the reference's order, so results match it to an ulp.
        let logPeriod = Float(-Foundation.log(Double(maxPeriod)))
        let denom = Float(half) - downscaleFreqShift
        let freqs = (0..<half).map { Foundation.exp(logPeriod * Float($0) / denom) }
        let out = Tensor.zeros([timesteps.count, dim])
        let o = out.data
        let (sinAt, cosAt) = flipSinToCos ? (half, 0) : (0, half)
        for (n, t) in timesteps.enumerated() {
            let row = o + n * dim
            for i in 0..<half {
                let arg = scale * (t * freqs[i])
                row[sinAt + i] = Foundation.sin(arg)
                row[cosAt + i] = Foundation.cos(arg)
            }
        }
        return out
    }
}
