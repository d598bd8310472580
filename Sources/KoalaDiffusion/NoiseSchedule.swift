import Foundation

/// The training noise schedule: betas, alphas and their cumulative product, computed as
/// diffusers does (float32 tensors; `torch.linspace` and `torch.cumprod` reproduced bit
/// for bit).
public struct NoiseSchedule: Sendable, Equatable {
    public let numTrainTimesteps: Int
    public let betas: [Float]
    public let alphas: [Float]
    /// ᾱ_t = Π (1 − β_s), s ≤ t. Under `rescale_betas_zero_snr` the last value is 0, as in
    /// DDPM/DDIM; DPM-Solver and Euler replace it by 2⁻²⁴ themselves.
    public let alphasCumprod: [Float]

    public init(config: SchedulerConfig) {
        let n = config.numTrainTimesteps
        var betas: [Float]
        if let trained = config.trainedBetas {
            betas = trained.map { Float($0) }
        } else {
            switch config.betaSchedule {
            case .linear:
                betas = TorchMath.linspace(Float(config.betaStart), Float(config.betaEnd), n)
            case .scaledLinear:
                betas = TorchMath.linspace(Float(pow(config.betaStart, 0.5)), Float(pow(config.betaEnd, 0.5)), n)
                    .map { $0 * $0 }
            case .squaredcosCapV2:
                betas = NoiseSchedule.cosineBetas(n)
            }
        }
        if config.rescaleBetasZeroSNR { betas = NoiseSchedule.rescaledToZeroTerminalSNR(betas) }
        let alphas = betas.map { 1 - $0 }
        self.numTrainTimesteps = n
        self.betas = betas
        self.alphas = alphas
        self.alphasCumprod = TorchMath.cumprod(alphas)
    }

    /// Glide's cosine schedule, in double precision as diffusers' `betas_for_alpha_bar`.
    static func cosineBetas(_ n: Int) -> [Float] {
        func alphaBar(_ t: Double) -> Double {
            let c = cos((t + 0.008) / 1.008 * Double.pi / 2)
            return c * c
        }
        return (0..<n).map { i in
            let t1 = Double(i) / Double(n), t2 = Double(i + 1) / Double(n)
            return Float(min(1 - alphaBar(t2) / alphaBar(t1), 0.999))
        }
    }

    /// Algorithm 1 of arXiv 2305.08891, in float32 as diffusers' `rescale_zero_terminal_snr`.
    static func rescaledToZeroTerminalSNR(_ betas: [Float]) -> [Float] {
        var s = TorchMath.cumprod(betas.map { 1 - $0 }).map { $0.squareRoot() }
        let s0 = s[0], sT = s[s.count - 1]
        let scale = s0 / (s0 - sT)
        for i in s.indices { s[i] = (s[i] - sT) * scale }
        let bar = s.map { $0 * $0 }
        var alphas = [bar[0]]
        for i in 1..<bar.count { alphas.append(bar[i] / bar[i - 1]) }
        return alphas.map { 1 - $0 }
    }

    /// σ_t = sqrt((1 − ᾱ_t) / ᾱ_t) per training timestep, in float32.
    static func sigmas(_ alphasCumprod: [Float]) -> [Float] {
        alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
    }

    /// ᾱ as the sigma-based samplers (DPM-Solver, Euler) use it: a zero-terminal-SNR
    /// schedule's last ᾱ is 0, so diffusers floors it at 2^-24 to keep σ finite.
    func samplerAlphasCumprod(_ config: SchedulerConfig) -> [Float] {
        var ac = alphasCumprod
        if config.rescaleBetasZeroSNR { ac[ac.count - 1] = 0x1p-24 }
        return ac
    }
}

/// float32 results of the torch functions the schedules use, with torch's rounding.
enum TorchMath {
    /// `torch.linspace(start, end, n, dtype=float32)` on CPU: a float32 step, each value one
    /// fused multiply-add from the nearer end.
    static func linspace(_ start: Float, _ end: Float, _ n: Int) -> [Float] {
        if n == 1 { return [start] }
        let step = (end - start) / Float(n - 1)
        let half = n / 2
        return (0..<n).map { i in
            i < half ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(n - 1 - i))
        }
    }

    /// `torch.cumprod` of float32 on CPU accumulates in double and rounds each output.
    static func cumprod(_ x: [Float]) -> [Float] {
        var acc = 1.0
        return x.map { acc *= Double($0); return Float(acc) }
    }
}

/// float64 results of the numpy functions the timestep schedules use, with numpy's rounding.
enum NumPyMath {
    /// `np.linspace(start, stop, n)`: i·step + start, the last value exactly `stop`.
    static func linspace(_ start: Double, _ stop: Double, _ n: Int) -> [Double] {
        if n == 1 { return [start] }
        let step = (stop - start) / Double(n - 1)
        var y = (0..<n).map { Double($0) * step + start }
        y[n - 1] = stop
        return y
    }

    /// `np.arange(start, stop, step)` for doubles: numpy fills start + i·(x₁ − start).
    static func arange(_ start: Double, _ stop: Double, _ step: Double) -> [Double] {
        let length = max(0, Int(((stop - start) / step).rounded(.up)))
        if length == 0 { return [] }
        var y = [start]
        if length == 1 { return y }
        let second = start + step
        y.append(second)
        let delta = second - start
        for i in 2..<length { y.append(start + Double(i) * delta) }
        return y
    }

    /// `np.interp(x, arange(len(fp)), fp)`.
    static func interp(_ x: Double, _ fp: [Float]) -> Double {
        let last = fp.count - 1
        if x <= 0 { return Double(fp[0]) }
        if x >= Double(last) { return Double(fp[last]) }
        let j = Int(x.rounded(.down))
        if Double(j) == x { return Double(fp[j]) }
        let slope = (Double(fp[j + 1]) - Double(fp[j])) / 1.0
        return slope * (x - Double(j)) + Double(fp[j])
    }

    /// `np.round`: halves go to the even neighbour.
    static func round(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }

    /// Karras et al. (2022) sigmas, ρ = 7, as diffusers' `_convert_to_karras`.
    static func karrasSigmas(sigmaMin: Double, sigmaMax: Double, count: Int) -> [Double] {
        let rho = 7.0
        let minInv = pow(sigmaMin, 1 / rho), maxInv = pow(sigmaMax, 1 / rho)
        return linspace(0, 1, count).map { pow(maxInv + $0 * (minInv - maxInv), rho) }
    }

    /// diffusers' `_sigma_to_t`: the fractional training timestep whose log-sigma, linearly
    /// interpolated, equals log(sigma). `logSigmas` are float32 as diffusers keeps them.
    static func sigmaToT(_ sigma: Double, logSigmas: [Float]) -> Double {
        let logSigma = log(max(sigma, 1e-10))
        // The last index whose log-sigma is <= log(sigma) (0 when none), kept below the end.
        var low = 0
        for i in logSigmas.indices where logSigma - Double(logSigmas[i]) >= 0 { low = i }
        low = min(low, logSigmas.count - 2)
        let lo = Double(logSigmas[low]), hi = Double(logSigmas[low + 1])
        let w = min(max((lo - logSigma) / (lo - hi), 0), 1)
        return (1 - w) * Double(low) + w * Double(low + 1)
    }

    /// numpy's float32 `log` of the sigma table (its SIMD log may differ by an ulp or two;
    /// this is the correctly rounded value).
    static func logSigmas(_ sigmas: [Float]) -> [Float] {
        sigmas.map { Float(log(Double($0))) }
    }
}
