import Foundation

/// A training size: photos in it are resized to cover `width` x `height` and cropped to it.
public struct AspectBucket: Hashable, Sendable, CustomStringConvertible {
    public var width: Int
    public var height: Int

    public init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }

    public var description: String { "\(width)x\(height)" }
}

/// SDXL-style aspect-ratio buckets (`data.aspect_buckets`).
///
/// The ladder follows the SDXL paper's (Podell et al. 2023, appendix): sides are
/// multiples of a step, each bucket holds at most `resolution²` pixels and as many as
/// that allows, and the long side is at most 4 times the short one. At 1024 px with
/// step 64 this gives SDXL's 1024x1024, 1152x896, 1216x832, 1344x768, 1536x640,
/// 1792x576, 2048x512 and their transposes.
public enum AspectBuckets {
    /// Longest side over shortest side allowed in a bucket (SDXL: 2048x512).
    public static let maxAspectRatio = 4

    /// The side step: 64 (SDXL's) from 512 px up, else `pixelMultiple`, the smallest side
    /// multiple the U-Net accepts (32 for every SDXL-family model: VAE factor 8 times two
    /// U-Net downsamplings), so small test resolutions still get more than one bucket.
    /// Always a multiple of `pixelMultiple`.
    public static func step(resolution: Int, pixelMultiple: Int) -> Int {
        precondition(pixelMultiple > 0, "pixelMultiple must be positive")
        guard resolution >= 512 else { return pixelMultiple }
        return lcm(64, pixelMultiple)
    }

    /// Every bucket for `resolution`, ordered by width (portrait first); the square one,
    /// `floor(resolution / step) * step` on a side, is always there.
    public static func ladder(resolution: Int, step: Int) -> [AspectBucket] {
        precondition(step > 0 && resolution >= step, "resolution \(resolution) is smaller than the bucket step \(step)")
        let area = resolution * resolution
        var buckets = Set<AspectBucket>()
        var short = step
        while short * short <= area {
            let long = area / short / step * step
            if long >= short && long <= maxAspectRatio * short {
                buckets.insert(AspectBucket(width: short, height: long))
                buckets.insert(AspectBucket(width: long, height: short))
            }
            short += step
        }
        return buckets.sorted { ($0.width, $0.height) < ($1.width, $1.height) }
    }

    /// The bucket whose aspect ratio is nearest the photo's, measured as the distance of
    /// log(width / height), so a 2:1 and a 1:2 photo are treated alike; on a tie the
    /// squarer bucket wins.
    public static func nearest(width: Int, height: Int, in buckets: [AspectBucket]) -> AspectBucket {
        precondition(!buckets.isEmpty && width > 0 && height > 0, "nearest: no buckets or an empty photo")
        let ratio = log(Double(width) / Double(height))
        func distance(_ b: AspectBucket) -> Double { abs(log(Double(b.width) / Double(b.height)) - ratio) }
        func squareness(_ b: AspectBucket) -> Double { abs(log(Double(b.width) / Double(b.height))) }
        return buckets.min { a, b in
            let (da, db) = (distance(a), distance(b))
            return abs(da - db) > 1e-12 ? da < db : squareness(a) < squareness(b)
        }!
    }

    /// The size a `width` x `height` photo is resized to so that it just covers `bucket`
    /// (the side that decides is scaled exactly onto the bucket's; the other is truncated
    /// like torchvision's `Resize(int)` and never falls below the bucket's).
    public static func coverSize(width: Int, height: Int, bucket: AspectBucket) -> (width: Int, height: Int) {
        if bucket.width * height >= bucket.height * width {
            return (bucket.width, max(bucket.height, Int(Double(height * bucket.width) / Double(width))))
        }
        return (max(bucket.width, Int(Double(width * bucket.height) / Double(height))), bucket.height)
    }

    private static func lcm(_ a: Int, _ b: Int) -> Int {
        var (x, y) = (a, b)
        while y != 0 { (x, y) = (y, x % y) }
        return a / x * b
    }
}
