import KoalaTensor

/// Training-side forward process (DDPM), as diffusers' `DDPMScheduler.add_noise`,
/// `get_velocity` and `training_utils.compute_snr` compute it. Results carry no autograd
/// history: noisy inputs and targets are constants of the loss.
extension NoiseSchedule {
    /// (sqrt(ᾱ_t), sqrt(1 − ᾱ_t)) in float32.
    private func coefficients(_ t: Int) -> (Float, Float) {
        precondition(t >= 0 && t < numTrainTimesteps, "timestep \(t) outside 0..<\(numTrainTimesteps)")
        let a = alphasCumprod[t]
        return (a.squareRoot(), (1 - a).squareRoot())
    }

    /// Per batch element b: sqrt(ᾱ_t) · x + sqrt(1 − ᾱ_t) · noise, t = timesteps[b].
    public func addNoise(original: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        perBatch(original, noise, timesteps) { a, s, x, n in a * x + s * n }
    }

    /// The v-prediction target per batch element: sqrt(ᾱ_t) · noise − sqrt(1 − ᾱ_t) · sample.
    public func velocity(sample: Tensor, noise: Tensor, timesteps: [Int]) -> Tensor {
        perBatch(sample, noise, timesteps) { a, s, x, n in a * n - s * x }
    }

    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) per timestep (for min-SNR-γ loss weighting).
    public func snr(timesteps: [Int]) -> [Float] {
        timesteps.map { t in
            let (a, s) = coefficients(t)
            let r = a / s
            return r * r
        }
    }

    /// Min-SNR-γ loss weights per timestep (Hang et al. 2023), as diffusers' training
    /// scripts: min(SNR, γ)/SNR for epsilon, min(SNR, γ)/(SNR + 1) for v-prediction.
    public func minSNRWeights(timesteps: [Int], gamma: Double, predictionType: PredictionType) -> [Float] {
        snr(timesteps: timesteps).map { s in
            Float(min(Double(s), gamma)) / (predictionType == .vPrediction ? s + 1 : s)
        }
    }

    /// kohya sd-scripts' `debiased_estimation` loss weights per timestep: with the SNR
    /// clamped to 1000 (it is infinite-like near t = 0), 1/sqrt(SNR) for epsilon and
    /// 1/(SNR + 1) for v-prediction.
    public func debiasedEstimationWeights(timesteps: [Int], predictionType: PredictionType) -> [Float] {
        snr(timesteps: timesteps).map { s in
            let c = min(s, 1000)
            return predictionType == .vPrediction ? 1 / (c + 1) : 1 / c.squareRoot()
        }
    }

    /// One training step's noise and timesteps for latents of `shape`, drawn from `source`
    /// in the order of diffusers' training scripts: noise like the latents, then (when
    /// `offset` ≠ 0) one offset value per sample and channel scaled by `offset` and added
    /// over the whole plane (arXiv "diffusion with offset noise"), then one timestep per
    /// sample in `minTimestep..<maxTimestep` (default: all of them) — or `maxTimestep` for
    /// every sample, with nothing drawn, when the range is empty, as sd-scripts' `get_timesteps`.
    public func trainingNoise(shape: [Int], offset: Float, minTimestep: Int = 0, maxTimestep: Int? = nil,
                              from source: inout some TensorRandomSource) -> (noise: Tensor, timesteps: [Int]) {
        precondition(shape.count == 4, "latents must be [batch, channels, height, width], not \(shape)")
        let maxTimestep = maxTimestep ?? numTrainTimesteps
        precondition(minTimestep >= 0 && maxTimestep <= numTrainTimesteps,
                     "timestep range \(minTimestep)..<\(maxTimestep) outside 0..<\(numTrainTimesteps)")
        var noise = source.randn(shape)
        if offset != 0 {
            noise = noise + (source.randn([shape[0], shape[1], 1, 1]) * offset).expand(shape)
        }
        guard minTimestep < maxTimestep else {
            precondition(maxTimestep < numTrainTimesteps, "fixed timestep \(maxTimestep) outside 0..<\(numTrainTimesteps)")
            return (noise, Array(repeating: maxTimestep, count: shape[0]))
        }
        return (noise, source.randint(low: minTimestep, high: maxTimestep, count: shape[0]))
    }

    private func perBatch(_ x: Tensor, _ n: Tensor, _ timesteps: [Int],
                          _ f: (Float, Float, Float, Float) -> Float) -> Tensor {
        precondition(x.shape == n.shape, "sample \(x.shape) and noise \(n.shape) differ in shape")
        precondition(x.rank >= 1 && x.shape[0] == timesteps.count,
                     "\(timesteps.count) timesteps for a batch of shape \(x.shape)")
        let x = x.contiguous(), n = n.contiguous(), out = Tensor(empty: x.shape)
        let per = x.count / max(timesteps.count, 1)
        let px = x.data, pn = n.data, po = out.data
        for (b, t) in timesteps.enumerated() {
            let (a, s) = coefficients(t)
            for i in b * per..<(b + 1) * per { po[i] = f(a, s, px[i], pn[i]) }
        }
        return out
    }
}
