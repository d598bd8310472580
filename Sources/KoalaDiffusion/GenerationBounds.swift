import Foundation
import KoalaModels
import KoalaTensor

/// The largest requests `generate` accepts. A request past these, or past what memory
/// allows (`GenerationFootprint`), is refused with the limit before any work starts:
/// otherwise the allocator aborts the process hours in, or never returns.
public enum GenerationLimits {
    /// Longest image side in pixels. SDXL-family models are trained at 1024 px (KOALA at
    /// 1024, SDXL's buckets reach 2048); beyond 4x that the pictures fall apart anyway.
    public static let maxSide = 4096
    /// Images per command. They are drawn and written one at a time, so memory does not
    /// bound the count; this cap keeps a typo (an extra zero or three) from filling the disk
    /// for days. Disk space is checked as well (`GenerationFootprint.outputBytes`).
    public static let maxCount = 10_000
}

/// Estimated peak working memory of drawing one image with a model, from its configs.
///
/// Generation holds the weights (already loaded when this is asked) plus the activations
/// of one image at a time: the U-Net's at latent resolution (batch 2 with guidance), then
/// the VAE decoder's at full resolution, which dominate for SDXL-family VAEs. The counts
/// of live tensors are deliberately generous (a refused request is a message; an
/// accepted one that does not fit is an abort).
public struct GenerationFootprint: Sendable {
    /// Estimated bytes per output pixel (the larger of the U-Net and VAE decode phases).
    public let bytesPerPixel: Double

    public init(unet: UNet2DConditionConfig, vae: AutoencoderKLConfig, vaeScaleFactor f: Int, guidance: Bool) {
        let c = unet.blockOutChannels.map(Double.init)
        // Per latent cell at U-Net level k (each level has a quarter of the cells of the one
        // above): skip connections of every level kept for the up path (≈3 tensors of c_k),
        // plus the working set of the widest level (resnet and transformer block inputs,
        // norms, the GEGLU feed-forward's 8·c_k hidden); attention is tiled.
        var skips = 0.0, working = 0.0
        for (k, ck) in c.enumerated() {
            let share = 1 / pow(4, Double(k))
            skips += 3 * ck * share
            working = max(working, 14 * ck * share)
        }
        let unetFloats = Double(guidance ? 2 : 1) * (skips + working) / Double(f * f)
        // VAE decoder level l (l = 0 at full resolution): the upsampled input (channels of
        // level l+1) and output (channels of level l) of its resnets, ≈2 + 3 tensors.
        let v = vae.blockOutChannels.map(Double.init)
        var vaeFloats = 0.0
        for l in v.indices {
            let input = v[min(l + 1, v.count - 1)]
            vaeFloats = max(vaeFloats, (2 * input + 3 * v[l]) / pow(4, Double(l)))
        }
        // + the decoded float image and its 8-bit copy.
        bytesPerPixel = 4 * max(unetFloats, vaeFloats) + 4 * 3 + 3
    }

    /// Estimated peak working bytes for one width × height image.
    public func workingBytes(width: Int, height: Int) -> Double { bytesPerPixel * Double(width) * Double(height) }

    /// The largest square side (a multiple of `multiple`, at most `GenerationLimits.maxSide`)
    /// whose working memory fits in `available` bytes; 0 when not even the smallest fits.
    public func largestSquareSide(available: Double, multiple: Int) -> Int {
        let side = Int((available / bytesPerPixel).squareRoot())
        return min(GenerationLimits.maxSide / multiple * multiple, side / multiple * multiple)
    }

    /// Upper bound of one written image file: an 8-bit RGB PNG is at most the raw pixels
    /// plus a few bytes per row and its chunks (the text chunks included).
    public static func outputBytes(width: Int, height: Int) -> Double {
        Double(width) * Double(height) * 3 + Double(height) * 8 + 65_536
    }
}

extension StableDiffusionXLPipeline {
    /// Width and height must be multiples of this: the VAE factor times the U-Net's
    /// down-sampling (it halves the latent blocks − 1 times and must be able to double it
    /// back).
    public var sizeMultiple: Int { vaeScaleFactor << (unet.config.downBlockTypes.count - 1) }

    /// The working-memory estimate of one image with this pipeline.
    public func footprint(guidance: Float) -> GenerationFootprint {
        GenerationFootprint(unet: unet.config, vae: vae.config, vaeScaleFactor: vaeScaleFactor, guidance: guidance > 1)
    }

    /// Refuses a request that cannot fit: a side over `GenerationLimits.maxSide`, a count
    /// over `GenerationLimits.maxCount`, or one image's working memory (plus
    /// `keptBytesPerImage` for each image whose output is kept in memory, such as final
    /// latents to save) over `available` bytes (`SystemMemory.availableBytes()`; nil:
    /// not known, not checked).
    public func checkRequest(width: Int, height: Int, count: Int, guidance: Float,
                             keptBytesPerImage: Double = 0, available: UInt64?) throws {
        for (name, side) in [("width", width), ("height", height)] where side > GenerationLimits.maxSide {
            throw GenerationError("the image \(name) \(side) is over the limit of \(GenerationLimits.maxSide) pixels; this model draws \(defaultSize.width)x\(defaultSize.height) natively")
        }
        guard count <= GenerationLimits.maxCount else {
            throw GenerationError("\(count) images is over the limit of \(GenerationLimits.maxCount) per command; run generate several times (with different seeds) for more")
        }
        guard let available else { return }
        let fp = footprint(guidance: guidance)
        let needed = fp.workingBytes(width: width, height: height) + keptBytesPerImage * Double(count)
        guard needed <= Double(available) else {
            let gib = { (b: Double) in String(format: "%.1f GiB", b / 1_073_741_824) }
            let side = fp.largestSquareSide(available: Double(available) - keptBytesPerImage * Double(count), multiple: sizeMultiple)
            let hint = side > 0 ? "the largest this model can draw in that is about \(side)x\(side)" : "not even the smallest image fits"
            throw GenerationError("""
                a \(width)x\(height) image\(keptBytesPerImage > 0 ? " (with \(count) latents kept to save)" : "") needs about \(gib(needed)) \
                of memory (about \(Int(fp.bytesPerPixel.rounded())) bytes per pixel for the VAE decode and U-Net), but only \
                \(gib(Double(available))) is available (MemAvailable and the cgroup limit); \(hint). \
                Draw a smaller image, or free memory
                """)
        }
    }
}
