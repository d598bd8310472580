/// Where `fitAndCrop` takes its square from.
public enum CropMode: Sendable, Equatable {
    /// Centered, with torchvision's `CenterCrop` rounding.
    case center
    /// A uniformly random position (torchvision's `RandomCrop`).
    case random
    /// The top-left corner at (x, y) in the resized image.
    case offset(x: Int, y: Int)
}

/// A training crop and the numbers SDXL's micro-conditioning needs.
public struct FittedCrop: Sendable, Equatable {
    public var image: RGBImage
    /// Size of the image before resizing.
    public var originalWidth: Int
    public var originalHeight: Int
    /// Top-left corner of the crop in the resized image (`crops_coords_top_left` is (y, x)).
    public var cropX: Int
    public var cropY: Int
}

extension RGBImage {
    /// The `width` x `height` region whose top-left corner is (x, y).
    public func cropped(x: Int, y: Int, width w: Int, height h: Int) -> RGBImage {
        precondition(w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= width && y + h <= height,
                     "crop \(w)x\(h) at (\(x), \(y)) does not fit in \(width)x\(height)")
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for row in 0..<h {
            let s = 3 * ((y + row) * width + x)
            out[(3 * w * row)..<(3 * w * (row + 1))] = pixels[s..<(s + 3 * w)]
        }
        return RGBImage(width: w, height: h, pixels: out)
    }

    /// Top-left corner of a centered `w` x `h` crop, rounded as torchvision's `center_crop`
    /// does (`round((size - crop) / 2)`, halves to even).
    public func centerCropOffset(width w: Int, height h: Int) -> (x: Int, y: Int) {
        precondition(w <= width && h <= height, "crop \(w)x\(h) is larger than the image \(width)x\(height)")
        return (Int((Double(width - w) / 2).rounded(.toNearestOrEven)), Int((Double(height - h) / 2).rounded(.toNearestOrEven)))
    }

    /// A uniformly random top-left corner for a `w` x `h` crop.
    public func randomCropOffset(width w: Int, height h: Int, using rng: inout some RandomNumberGenerator) -> (x: Int, y: Int) {
        precondition(w <= width && h <= height, "crop \(w)x\(h) is larger than the image \(width)x\(height)")
        let y = Int.random(in: 0...(height - h), using: &rng)
        let x = Int.random(in: 0...(width - w), using: &rng)
        return (x, y)
    }

    /// The size an image gets when its shorter side is scaled to `side`, computed like
    /// torchvision's `Resize(int)`: the longer side is `int(side * long / short)`.
    public static func fittedSize(width: Int, height: Int, shorterSide side: Int) -> (width: Int, height: Int) {
        let long = max(width, height), short = min(width, height)
        let newLong = Int(Double(side * long) / Double(short))
        return width <= height ? (side, newLong) : (newLong, side)
    }

    /// Training preprocessing: resize so the shorter side is `size` (`filter`, Lanczos by
    /// default), then crop a `size` x `size` square. `.random` draws from the system
    /// generator; pass your own with `fitAndCrop(to:mode:using:)`.
    public func fitAndCrop(to size: Int, mode: CropMode = .center, filter: ResampleFilter = .lanczos) -> FittedCrop {
        var rng = SystemRandomNumberGenerator()
        return fitAndCrop(to: size, mode: mode, using: &rng, filter: filter)
    }

    /// `fitAndCrop(to:mode:filter:)` with the random crop drawn from `rng`.
    public func fitAndCrop(to size: Int, mode: CropMode, using rng: inout some RandomNumberGenerator,
                           filter: ResampleFilter = .lanczos) -> FittedCrop {
        precondition(size > 0, "crop size must be positive")
        let fitted = Self.fittedSize(width: width, height: height, shorterSide: size)
        let resized = resized(width: fitted.width, height: fitted.height, filter: filter)
        let offset: (x: Int, y: Int)
        switch mode {
        case .center: offset = resized.centerCropOffset(width: size, height: size)
        case .random: offset = resized.randomCropOffset(width: size, height: size, using: &rng)
        case .offset(let x, let y): offset = (x, y)
        }
        return FittedCrop(image: resized.cropped(x: offset.x, y: offset.y, width: size, height: size),
                          originalWidth: width, originalHeight: height, cropX: offset.x, cropY: offset.y)
    }
}
