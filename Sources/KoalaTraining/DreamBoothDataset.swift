import Foundation
import KoalaImageIO
import KoalaModels
import KoalaTensor

/// One training photo, already resized and cropped to its training size (an aspect
/// bucket or the `data.resolution` square): planar RGB floats in [-1, 1]
/// (`RGBImage.planarFloats()`), plus what SDXL's micro-conditioning needs.
public struct TrainingImage: Sendable {
    public var pixels: [Float]
    public var width: Int
    public var height: Int
    /// The photo's size before resizing (`original_size`).
    public var originalWidth: Int
    public var originalHeight: Int
    /// Top-left corner of the crop in the resized photo (`crops_coords_top_left` is (y, x)).
    public var cropX: Int
    public var cropY: Int

    public init(pixels: [Float], width: Int, height: Int, originalWidth: Int, originalHeight: Int, cropX: Int = 0, cropY: Int = 0) {
        precondition(pixels.count == 3 * width * height, "TrainingImage: \(pixels.count) values for a \(width)x\(height) RGB image")
        self.pixels = pixels
        self.width = width
        self.height = height
        self.originalWidth = originalWidth
        self.originalHeight = originalHeight
        self.cropX = cropX
        self.cropY = cropY
    }

    /// A square `size` x `size` image.
    public init(pixels: [Float], size: Int, originalWidth: Int, originalHeight: Int, cropX: Int = 0, cropY: Int = 0) {
        self.init(pixels: pixels, width: size, height: size, originalWidth: originalWidth, originalHeight: originalHeight,
                  cropX: cropX, cropY: cropY)
    }

    /// `photo` resized (Lanczos) to just cover `bucket` and cropped to it: in the middle
    /// (torchvision's `CenterCrop` rounding) or at a position drawn from `rng`.
    public init(photo: RGBImage, bucket: AspectBucket, centerCrop: Bool, using rng: inout RandomGenerator) {
        let size = AspectBuckets.coverSize(width: photo.width, height: photo.height, bucket: bucket)
        let resized = photo.resized(width: size.width, height: size.height)
        let offset = centerCrop ? resized.centerCropOffset(width: bucket.width, height: bucket.height)
            : resized.randomCropOffset(width: bucket.width, height: bucket.height, using: &rng)
        let crop = resized.cropped(x: offset.x, y: offset.y, width: bucket.width, height: bucket.height)
        self.init(pixels: crop.planarFloats(), width: bucket.width, height: bucket.height, originalWidth: photo.width,
                  originalHeight: photo.height, cropX: offset.x, cropY: offset.y)
    }

    /// The bucket this image was cropped to.
    public var bucket: AspectBucket { AspectBucket(width: width, height: height) }

    /// SDXL `add_time_ids` [1, 6]: original size (h, w), crop top-left (y, x), target
    /// size (h, w) = the training size, as diffusers' `train_dreambooth_lora_sdxl.py`.
    public var timeIds: Tensor {
        Tensor(shape: [1, 6], values: [Float(originalHeight), Float(originalWidth), Float(cropY), Float(cropX),
                                       Float(height), Float(width)])
    }
}

/// Turns photos into training images (`[data]` keys) and holds their cached latents.
public enum DreamBoothDataset {
    /// The smallest side multiple the model's U-Net accepts, in pixels: the VAE factor
    /// times 2 per U-Net downsampling (32 for every SDXL-family model). Reads only the
    /// `unet` and `vae` configs of the diffusers folder at `modelPath`.
    public static func pixelMultiple(modelPath: String) throws -> Int {
        let folder = try PipelineFolder(path: modelPath)
        return pixelMultiple(vae: try folder.config(AutoencoderKLConfig.self, "vae"),
                             unet: try folder.config(UNet2DConditionConfig.self, "unet"))
    }

    static func pixelMultiple(vae: AutoencoderKLConfig, unet: UNet2DConditionConfig) -> Int {
        (1 << (vae.blockOutChannels.count - 1)) << (unet.downBlockTypes.count - 1)
    }

    /// The training sizes for `data`: the aspect-bucket ladder, or the one
    /// `data.resolution` square when `aspect_buckets` is off.
    public static func buckets(for data: TrainingRecipe.DataSection, pixelMultiple: Int) -> [AspectBucket] {
        guard data.aspectBuckets else { return [AspectBucket(width: data.resolution, height: data.resolution)] }
        return AspectBuckets.ladder(resolution: data.resolution,
                                    step: AspectBuckets.step(resolution: data.resolution, pixelMultiple: pixelMultiple))
    }

    /// Each photo in the bucket nearest its aspect ratio, resized and cropped to it. Random
    /// crops (`center_crop = false`) are drawn once per run from `seed`, in photo order.
    public static func prepare(_ photos: [RGBImage], data: TrainingRecipe.DataSection, seed: UInt64,
                               pixelMultiple: Int) throws -> [TrainingImage] {
        guard data.resolution >= pixelMultiple else {
            throw TrainingError("data.resolution \(data.resolution) is smaller than this model's smallest size, \(pixelMultiple) px; raise it")
        }
        if !data.aspectBuckets && data.resolution % pixelMultiple != 0 {
            let lower = data.resolution / pixelMultiple * pixelMultiple
            throw TrainingError("data.resolution \(data.resolution) must be a multiple of \(pixelMultiple) for this model when data.aspect_buckets = false; use \(lower) or \(lower + pixelMultiple)")
        }
        let buckets = buckets(for: data, pixelMultiple: pixelMultiple)
        var rng = RandomGenerator(seed: seed)
        return photos.map { photo in
            TrainingImage(photo: photo, bucket: AspectBuckets.nearest(width: photo.width, height: photo.height, in: buckets),
                          centerCrop: data.centerCrop, using: &rng)
        }
    }

    /// "64x64 ×5, 128x32 ×1": how many images train in each bucket, most used first (then by width).
    public static func summary(_ images: [TrainingImage]) -> String {
        var counts: [AspectBucket: Int] = [:]
        for img in images { counts[img.bucket, default: 0] += 1 }
        return counts.sorted { a, b in a.value != b.value ? a.value > b.value : a.key.width < b.key.width }
            .map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
    }
}

/// Training images encoded once by the VAE: per image its latent distribution, its
/// micro-conditioning and its bucket.
struct EncodedExamples {
    /// Latent distribution per image (mean, std), scaled; std is nil when training on the mean.
    let latents: [(mean: Tensor, std: Tensor?)]
    let timeIds: [Tensor]
    let buckets: [AspectBucket]
    /// The images of each bucket, in order.
    let members: [AspectBucket: [Int]]

    init(_ images: [TrainingImage], vae: AutoencoderKL, sampling: TrainingRecipe.LatentSampling) {
        let scale = Float(vae.config.scalingFactor)
        latents = noGrad {
            images.map { img in
                let dist = vae.encode(Tensor(shape: [1, 3, img.height, img.width], values: img.pixels))
                return (dist.mean * scale, sampling == .mean ? nil : dist.std * scale)
            }
        }
        timeIds = images.map(\.timeIds)
        buckets = images.map(\.bucket)
        var members: [AspectBucket: [Int]] = [:]
        for (i, b) in buckets.enumerated() { members[b, default: []].append(i) }
        self.members = members
    }

    var count: Int { latents.count }

    /// Image `i`'s training latent: its mean, or a fresh sample of its distribution.
    func latent(_ i: Int, _ rng: inout RandomGenerator) -> Tensor {
        let (mean, std) = latents[i]
        return std.map { mean + $0 * Tensor.randn(mean.shape, generator: &rng) } ?? mean
    }

    /// A uniformly drawn image of `bucket`.
    func draw(in bucket: AspectBucket, _ rng: inout RandomGenerator) -> Int {
        let m = members[bucket]!
        return m[rng.int(below: m.count)]
    }
}
