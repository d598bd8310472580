/// The EXIF orientation tag (0x0112): how the stored pixels must be transformed to
/// display upright. Raw values 1-8 as in the EXIF/TIFF specification.
public enum EXIFOrientation: Int, Sendable, CaseIterable {
    case up = 1             // as stored
    case upMirrored = 2     // flip left-right
    case down = 3           // rotate 180
    case downMirrored = 4   // flip top-bottom
    case leftMirrored = 5   // transpose (swap x and y)
    case right = 6          // rotate 90 degrees clockwise
    case rightMirrored = 7  // transverse (transpose, then rotate 180)
    case left = 8           // rotate 90 degrees counter-clockwise

    /// The orientation recorded in a JPEG's first Exif APP1 segment, or nil when there
    /// is none or it is malformed. Reads both TIFF byte orders.
    public static func read(fromJPEG bytes: [UInt8]) -> EXIFOrientation? {
        guard let tiff = exifPayload(bytes) else { return nil }
        return orientation(inTIFF: tiff)
    }

    /// The TIFF block of the first APP1 segment that starts with "Exif\0\0".
    static func exifPayload(_ b: [UInt8]) -> ArraySlice<UInt8>? {
        guard b.count >= 4, b[0] == 0xFF, b[1] == 0xD8 else { return nil }
        var i = 2
        while i + 4 <= b.count {
            guard b[i] == 0xFF else { return nil }
            let marker = b[i + 1]
            if marker == 0xFF { i += 1; continue }  // fill byte
            if marker == 0xD9 || marker == 0xDA { return nil }  // EOI, or start of scan: no more metadata
            if marker == 0x01 || (0xD0...0xD7).contains(marker) { i += 2; continue }  // no length field
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard length >= 2, i + 2 + length <= b.count else { return nil }
            let body = b[(i + 4)..<(i + 2 + length)]
            if marker == 0xE1, body.starts(with: [0x45, 0x78, 0x69, 0x66, 0, 0]) {  // "Exif\0\0"
                return body.dropFirst(6)
            }
            i += 2 + length
        }
        return nil
    }

    /// Finds tag 0x0112 in IFD0 of a TIFF block.
    static func orientation(inTIFF tiff: ArraySlice<UInt8>) -> EXIFOrientation? {
        let t = Array(tiff)
        guard t.count >= 8 else { return nil }
        let little: Bool
        switch (t[0], t[1]) {
        case (0x49, 0x49): little = true   // "II"
        case (0x4D, 0x4D): little = false  // "MM"
        default: return nil
        }
        func u16(_ o: Int) -> Int? {
            guard o >= 0, o + 2 <= t.count else { return nil }
            return little ? Int(t[o]) | Int(t[o + 1]) << 8 : Int(t[o]) << 8 | Int(t[o + 1])
        }
        func u32(_ o: Int) -> Int? {
            guard let a = u16(o), let b = u16(o + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
        for entry in 0..<count {
            let o = ifd + 2 + 12 * entry
            guard let tag = u16(o), let type = u16(o + 2) else { return nil }
            guard tag == 0x0112 else { continue }
            // SHORT (3) is the specified type; tolerate LONG (4) from sloppy writers.
            let value = type == 4 ? u32(o + 8) : u16(o + 8)
            return value.flatMap(EXIFOrientation.init(rawValue:))
        }
        return nil
    }
}

extension RGBImage {
    /// The image transformed so that a picture stored with `orientation` reads upright
    /// (what Pillow's `ImageOps.exif_transpose` does).
    public func oriented(_ orientation: EXIFOrientation) -> RGBImage {
        switch orientation {
        case .up: return self
        case .upMirrored: return flippedHorizontally()
        case .down: return remapped(width: width, height: height) { x, y in (width - 1 - x, height - 1 - y) }
        case .downMirrored: return flippedVertically()
        case .leftMirrored: return remapped(width: height, height: width) { x, y in (y, x) }
        case .right: return remapped(width: height, height: width) { x, y in (y, height - 1 - x) }
        case .rightMirrored: return remapped(width: height, height: width) { x, y in (width - 1 - y, height - 1 - x) }
        case .left: return remapped(width: height, height: width) { x, y in (width - 1 - y, x) }
        }
    }

    /// Mirror image (left and right swapped), e.g. for random-flip augmentation.
    public func flippedHorizontally() -> RGBImage {
        remapped(width: width, height: height) { x, y in (width - 1 - x, y) }
    }

    /// Upside-down mirror image.
    public func flippedVertically() -> RGBImage {
        remapped(width: width, height: height) { x, y in (x, height - 1 - y) }
    }

    /// Builds a new image where output pixel (x, y) is the source pixel `source(x, y)`.
    private func remapped(width w: Int, height h: Int, _ source: (Int, Int) -> (Int, Int)) -> RGBImage {
        var out = [UInt8](repeating: 0, count: w * h * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<h {
                    for x in 0..<w {
                        let (sx, sy) = source(x, y)
                        let s = 3 * (sy * width + sx), d = 3 * (y * w + x)
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }
}
