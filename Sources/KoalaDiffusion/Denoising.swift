import Foundation
import KoalaModels
import KoalaTensor

/// SDXL micro-conditioning `add_time_ids` for `batch` rows: original size (h, w), crop
/// top-left (0, 0), target size (h, w).
public func sdxlTimeIds(width: Int, height: Int, batch: Int) -> Tensor {
    let row: [Float] = [Float(height), Float(width), 0, 0, Float(height), Float(width)]
    return Tensor(shape: [batch, 6], values: Array([[Float]](repeating: row, count: batch).joined()))
}

/// The denoising loop of diffusers' `StableDiffusionXLPipeline.__call__` on prompts that
/// are already encoded: `StableDiffusionXLPipeline.generate` and the validation images
/// drawn while training both run it, so the two give the same image for the same inputs.
///
/// - Parameters:
///   - unet: used as it is (LoRA adapters, fine-tuned weights); the caller turns off
///     anything training-only such as adapter dropout.
///   - scheduler: with its timesteps set.
///   - conditional: one row per image.
///   - unconditional: the negative embeddings, one row per image; with `guidance > 1`
///     each step runs both halves as one batch (classifier-free guidance), otherwise it
///     is not used.
///   - noise: unscaled standard-normal starting latents [count, C, height/f, width/f].
/// - Returns: the final latents (still scaled for the U-Net).
/// - Throws: `NonFiniteLatentsError` when the latents hold a NaN or infinity after a step
///   (an overflowing guidance or LoRA scale, corrupt weights): decoded, they would be an
///   all-black picture passed off as a result.
public func denoiseLatents(unet: UNet2DConditionModel, scheduler: inout any Scheduler,
                           conditional: PromptEmbeddings, unconditional: PromptEmbeddings?,
                           guidance: Float, guidanceRescale: Float = 0, noise: Tensor, width: Int, height: Int,
                           progress: (GenerationProgress) -> Void = { _ in }) throws -> Tensor {
    precondition(conditional.hiddenStates.shape[0] == noise.shape[0],
                 "denoiseLatents: \(conditional.hiddenStates.shape[0]) prompt rows for \(noise.shape[0]) latents")
    return try noGrad {
        var context = conditional.hiddenStates, pooled = conditional.pooled
        let cfg = guidance > 1
        if cfg {
            guard let uncond = unconditional else { preconditionFailure("denoiseLatents: guidance \(guidance) needs unconditional embeddings") }
            context = Tensor.cat([uncond.hiddenStates, conditional.hiddenStates], dim: 0)
            pooled = Tensor.cat([uncond.pooled, conditional.pooled], dim: 0)
        }
        let timeIds = sdxlTimeIds(width: width, height: height, batch: context.shape[0])
        var latents = noise * scheduler.initNoiseSigma
        let start = Date()
        let timesteps = scheduler.timesteps
        for (i, t) in timesteps.enumerated() {
            let input = scheduler.scaleModelInput(cfg ? Tensor.cat([latents, latents], dim: 0) : latents, timestep: t)
            var eps = unet(sample: input, timestep: [t], encoderHiddenStates: context, textEmbeds: pooled, timeIds: timeIds)
            if cfg {
                let parts = eps.chunk(2, dim: 0)
                let (uncond, text) = (parts[0], parts[1])
                eps = uncond + guidance * (text - uncond)
                if guidanceRescale > 0 { eps = rescaleNoiseCFG(eps, text: text, rescale: guidanceRescale) }
            }
            latents = scheduler.step(modelOutput: eps, timestep: t, sample: latents)
            if latents.firstNonFiniteIndex() != nil {
                throw NonFiniteLatentsError(step: i + 1, total: timesteps.count, timestep: t, guidance: guidance)
            }
            progress(GenerationProgress(step: i + 1, total: timesteps.count, elapsed: Date().timeIntervalSince(start)))
        }
        return latents
    }
}

/// The denoising loop's latents went NaN or infinite: the U-Net's output overflowed.
public struct NonFiniteLatentsError: Error, CustomStringConvertible {
    /// 1-based step after which the latents were first non-finite.
    public let step: Int
    public let total: Int
    public let timestep: Float
    public let guidance: Float

    public var description: String {
        "the latents became NaN or infinite at denoising step \(step) of \(total) (timestep \(String(format: "%g", timestep))), so the picture " +
            "would be black and none is written; the model's output overflowed. Lower the guidance scale (now \(String(format: "%g", guidance))) " +
            "or the LoRA scale, or check the model and LoRA weights for corrupt values"
    }
}

/// Undoes the VAE's latent normalisation before decoding: `latents_mean`/`latents_std`
/// when the config has them, else the scaling factor.
public func unscaleLatents(_ latents: Tensor, config c: AutoencoderKLConfig) -> Tensor {
    if let mean = c.latentsMean, let std = c.latentsStd {
        let shape = [1, mean.count, 1, 1]
        return latents * Tensor(shape: shape, values: std.map(Float.init)) / Float(c.scalingFactor)
            + Tensor(shape: shape, values: mean.map(Float.init))
    }
    return latents / Float(c.scalingFactor)
}

/// The decoding half of a VAE, kept on its own where the encoder is no longer needed
/// (training caches the photos' latents once; validation images only decode). For
/// SDXL's VAE the decoder is ~50M of its ~84M parameters.
public final class LatentDecoder {
    public let config: AutoencoderKLConfig
    private let decoder: VAEDecoder
    private let postQuantConv: Conv2d?

    /// Keeps `vae`'s decoder and post-quant convolution (shared, not copied).
    public init(_ vae: AutoencoderKL) {
        config = vae.config
        decoder = vae.decoder
        postQuantConv = vae.postQuantConv
    }

    /// Pixels per latent cell: 2^(VAE blocks − 1), 8 for SDXL.
    public var scaleFactor: Int { 1 << (config.blockOutChannels.count - 1) }

    /// Images [B, 3, H, W] in about [-1, 1] from U-Net latents [B, 4, h, w], as
    /// `StableDiffusionXLPipeline.decodeLatents` (untiled).
    public func decode(_ latents: Tensor) -> Tensor {
        noGrad {
            let z = unscaleLatents(latents, config: config)
            return decoder(postQuantConv?(z) ?? z)
        }
    }
}
