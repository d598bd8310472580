import KoalaModels

/// Whether the VAE decodes the final latents whole or in overlapping tiles (diffusers'
/// `enable_vae_tiling()`: tiles of `AutoencoderKL.tileSampleSize` pixels, the VAE's
/// `sample_size`, blended over a quarter of a tile). Tiling bounds the decoder's
/// activations by the tile instead of the image (for KOALA-700M about 3.5 KB per pixel
/// of the image untiled, 0.9 GB per 512 px tile), at the price of more decoder work
/// (overlaps) and slightly different pixels near the seams.
public enum VAETiling: String, Sendable, CaseIterable {
    /// Tiles exactly when decoding whole would not fit: when the request's estimated
    /// working memory untiled (`GenerationFootprint.workingBytes(tiled: false)`, the
    /// estimate `checkRequest` refuses on) is more than the memory available
    /// (`SystemMemory.availableBytes()`, MemAvailable within any cgroup limit). Ordinary
    /// sizes therefore decode whole, identical to diffusers' default; where the available
    /// memory is not known (not Linux) nothing is tiled.
    case auto
    /// Always in tiles (images no larger than one tile decode whole all the same, as in
    /// diffusers).
    case on
    /// Always whole, as diffusers without `enable_vae_tiling()`.
    case off
}

extension StableDiffusionXLPipeline {
    /// Whether `tiling` decodes `images` width × height images, decoded together, in tiles
    /// when `available` bytes are free (`keptBytes`: memory the request holds besides its
    /// working memory, such as latents kept to save). See `VAETiling.auto` for the rule.
    public func decodesTiled(_ tiling: VAETiling, width: Int, height: Int, guidance: Float, images: Int = 1,
                             keptBytes: Double = 0, available: UInt64?) -> Bool {
        switch tiling {
        case .on: return true
        case .off: return false
        case .auto:
            guard let available else { return false }
            let whole = footprint(guidance: guidance).workingBytes(width: width, height: height, tiled: false)
            return whole * Double(images) + keptBytes > Double(available)
        }
    }
}
