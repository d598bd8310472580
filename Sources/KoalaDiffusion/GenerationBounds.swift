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
/// the VAE decoder's at full resolution, which dominate for SDXL-family VAEs unless the
/// decode is tiled (`VAETiling`): then they are those of one tile. The counts of live
/// tensors are deliberately generous (a refused request is a message; an accepted one
/// that does not fit is an abort).
public struct GenerationFootprint: Sendable {
    /// Estimated U-Net working bytes per output pixel.
    public let unetBytesPerPixel: Double
    /// Estimated VAE decoder working bytes per decoded pixel (the whole image untiled,
    /// one tile tiled).
    public let decoderBytesPerPixel: Double
    /// Pixel side of one decode tile (`AutoencoderKL.tileSampleSize`) and the fraction
    /// of it that overlaps the next (`tileOverlapFactor`).
    public let tileSampleSize: Int
    public let tileOverlapFactor: Double
    private let vaeScaleFactor: Int

    /// The decoded float image and its 8-bit copy.
    public static let imageBytesPerPixel = 4.0 * 3 + 3

    /// Estimated bytes per output pixel of an untiled request (the larger of the U-Net and
    /// VAE decode phases, plus the image).
    public var bytesPerPixel: Double { max(unetBytesPerPixel, decoderBytesPerPixel) + Self.imageBytesPerPixel }

    /// `tileSampleSize` nil: the VAE's `sample_size`, as `AutoencoderKL` tiles by default.
    public init(unet: UNet2DConditionConfig, vae: AutoencoderKLConfig, vaeScaleFactor f: Int, guidance: Bool,
                tileSampleSize: Int? = nil, tileOverlapFactor: Double = 0.25) {
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
        unetBytesPerPixel = 4 * Double(guidance ? 2 : 1) * (skips + working) / Double(f * f)
        // VAE decoder level l (l = 0 at full resolution): the upsampled input (channels of
        // level l+1) and output (channels of level l) of its resnets, ≈2 + 3 tensors.
        let v = vae.blockOutChannels.map(Double.init)
        var vaeFloats = 0.0
        for l in v.indices {
            let input = v[min(l + 1, v.count - 1)]
            vaeFloats = max(vaeFloats, (2 * input + 3 * v[l]) / pow(4, Double(l)))
        }
        decoderBytesPerPixel = 4 * vaeFloats
        self.tileSampleSize = tileSampleSize ?? vae.sampleSize
        self.tileOverlapFactor = tileOverlapFactor
        vaeScaleFactor = f
    }

    /// Estimated peak working bytes for one width × height image, its decode whole or in
    /// tiles.
    public func workingBytes(width: Int, height: Int, tiled: Bool = false) -> Double {
        let pixels = Double(width) * Double(height)
        return max(unetBytesPerPixel * pixels, decodeBytes(width: width, height: height, tiled: tiled))
            + Self.imageBytesPerPixel * pixels
    }

    /// Estimated VAE decode working bytes (the final image apart). Tiled, as
    /// `AutoencoderKL.tiledDecode` works: one tile's decoder activations, the decoded
    /// tiles of the row above and of the current row (3 floats a pixel), and the cropped
    /// rows with the image they are joined into. No larger than one tile decodes whole.
    public func decodeBytes(width: Int, height: Int, tiled: Bool) -> Double {
        let pixels = Double(width) * Double(height)
        guard tiled, width > tileSampleSize || height > tileSampleSize else { return decoderBytesPerPixel * pixels }
        let tile = Double(min(tileSampleSize, width)) * Double(min(tileSampleSize, height))
        // The same truncations as the decode: latent tiles every tileLatent·(1 − overlap).
        let step = max(1, Int(Double(tileSampleSize / vaeScaleFactor) * (1 - tileOverlapFactor)))
        let tilesPerRow = Double((width / vaeScaleFactor + step - 1) / step)
        return decoderBytesPerPixel * tile + 4 * 3 * (2 * tilesPerRow * tile + 2 * pixels)
    }

    /// The largest square side (a multiple of `multiple`, at most `GenerationLimits.maxSide`)
    /// whose working memory fits in `available` bytes; 0 when not even the smallest fits.
    public func largestSquareSide(available: Double, multiple: Int, tiled: Bool = false) -> Int {
        let sides = stride(from: GenerationLimits.maxSide / multiple * multiple, through: multiple, by: -multiple)
        return sides.first { workingBytes(width: $0, height: $0, tiled: tiled) <= available } ?? 0
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

    /// The working-memory estimate of one image with this pipeline (tiles of its VAE's
    /// `tileSampleSize` and `tileOverlapFactor`).
    public func footprint(guidance: Float) -> GenerationFootprint {
        GenerationFootprint(unet: unet.config, vae: vae.config, vaeScaleFactor: vaeScaleFactor, guidance: guidance > 1,
                            tileSampleSize: vae.tileSampleSize, tileOverlapFactor: vae.tileOverlapFactor)
    }

    /// Refuses a request that cannot fit: a side over `GenerationLimits.maxSide`, a count
    /// over `GenerationLimits.maxCount`, or one image's working memory (plus
    /// `keptBytesPerImage` for each image whose output is kept in memory, such as final
    /// latents to save) over `available` bytes (`SystemMemory.availableBytes()`; nil:
    /// not known, not checked). The decode counts as tiled where `vaeTiling` tiles (for
    /// `auto`: where the untiled request would not fit), so a size refused whole can pass
    /// in tiles. Returns that choice (`on` or `off`) for the generation to use, so that
    /// the check and the decode agree.
    @discardableResult
    public func checkRequest(width: Int, height: Int, count: Int, guidance: Float, vaeTiling: VAETiling = .auto,
                             keptBytesPerImage: Double = 0, available: UInt64?) throws -> VAETiling {
        for (name, side) in [("width", width), ("height", height)] where side > GenerationLimits.maxSide {
            throw GenerationError("the image \(name) \(side) is over the limit of \(GenerationLimits.maxSide) pixels; this model draws \(defaultSize.width)x\(defaultSize.height) natively")
        }
        guard count <= GenerationLimits.maxCount else {
            throw GenerationError("\(count) images is over the limit of \(GenerationLimits.maxCount) per command; run generate several times (with different seeds) for more")
        }
        let kept = keptBytesPerImage * Double(count)
        let tiled = decodesTiled(vaeTiling, width: width, height: height, guidance: guidance, keptBytes: kept, available: available)
        guard let available else { return tiled ? .on : .off }
        let fp = footprint(guidance: guidance)
        let working = fp.workingBytes(width: width, height: height, tiled: tiled)
        guard working + kept > Double(available) else { return tiled ? .on : .off }
        let gib = { (b: Double) in String(format: "%.1f GiB", b / 1_073_741_824) }
        let side = fp.largestSquareSide(available: Double(available) - kept, multiple: sizeMultiple, tiled: tiled)
        let hint = side > 0 ? "the largest this model can draw in that is about \(side)x\(side)" : "not even the smallest image fits"
        // Libraries say what is wrong; the caller names its own switch for tiling.
        let inTiles = fp.workingBytes(width: width, height: height, tiled: true) + kept
        let advice = !tiled && inTiles <= Double(available)
            ? "Decoded in VAE tiles it would need about \(gib(inTiles)), which fits; or draw a smaller image"
            : "Draw a smaller image, or free memory"
        throw GenerationError("""
            a \(width)x\(height) image\(keptBytesPerImage > 0 ? " (with \(count) latents kept to save)" : "") needs about \(gib(working + kept)) \
            of memory\(tiled ? " even with the VAE decoding in tiles" : "") \
            (about \(Int((working / (Double(width) * Double(height))).rounded())) bytes per pixel for the VAE decode and U-Net), \
            but only \(gib(Double(available))) is available (MemAvailable and the cgroup limit); \(hint). \(advice)
            """)
    }
}
