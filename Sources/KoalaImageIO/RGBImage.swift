import Foundation

/// An 8-bit RGB image: `pixels` holds `width * height * 3` bytes, rows top to bottom,
/// each pixel R, G, B. This is the form every decoder produces (grayscale replicated,
/// CMYK converted, alpha composited on white) and every encoder takes.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0, "RGBImage needs a positive size, got \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "RGBImage \(width)x\(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image filled with one colour.
    public init(width: Int, height: Int, fill: (r: UInt8, g: UInt8, b: UInt8) = (0, 0, 0)) {
        var p = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) { p[3 * i] = fill.r; p[3 * i + 1] = fill.g; p[3 * i + 2] = fill.b }
        self.init(width: width, height: height, pixels: p)
    }

    /// The pixel at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel (\(x), \(y)) outside \(width)x\(height)")
        let i = 3 * (y * width + x)
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }

    public var shorterSide: Int { min(width, height) }
}

// MARK: Loading

extension RGBImage {
    /// Reads a JPEG or PNG file, recognised by its contents (not its extension), and
    /// returns it upright (JPEG EXIF orientation applied) in RGB.
    public static func load(path: String) throws -> RGBImage {
        try decode(readFile(path), path: path)
    }

    /// `load(path:)` plus the size check training needs: both sides must be at least
    /// `minimumSide` pixels.
    public static func loadForTraining(path: String, minimumSide: Int) throws -> RGBImage {
        let image = try load(path: path)
        if image.shorterSide < minimumSide {
            throw ImageIOError.tooSmall(path: path, width: image.width, height: image.height, minimumSide: minimumSide)
        }
        return image
    }

    /// Decodes JPEG or PNG bytes; `path` only names the source in errors.
    public static func decode(_ bytes: [UInt8], path: String = "<memory>") throws -> RGBImage {
        if bytes.isEmpty { throw ImageIOError.emptyFile(path: path) }
        switch ImageFormat.sniff(bytes) {
        case .supported(.jpeg):
            let image = try JPEGCodec.decode(bytes, path: path)
            let orientation = EXIFOrientation.read(fromJPEG: bytes) ?? .up
            return image.oriented(orientation)
        case .supported(.png):
            return try PNGCodec.decode(bytes, path: path).image
        case .unsupported(let name):
            throw ImageIOError.unsupportedFormat(path: path, format: name)
        case .notAnImage(let guess):
            throw ImageIOError.notAnImage(path: path, looksLike: guess)
        }
    }

    /// The file's bytes, read only from a regular file (a FIFO would block forever,
    /// `/dev/zero` would be read until memory runs out) and only up to
    /// `ImageLimits.maxFileBytes`. KoalaTensor's `BoundedFile` does the same for the other
    /// files KoalaBooth reads; this module does not depend on KoalaTensor.
    static func readFile(_ path: String) throws -> [UInt8] {
        // O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw ImageIOError.fileNotFound(path: path) }
            throw ImageIOError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ImageIOError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw ImageIOError.unreadable(path: path, reason: "it is a directory")
        case S_IFIFO: throw ImageIOError.unreadable(path: path, reason: "it is a FIFO (named pipe), not a regular file")
        case S_IFCHR, S_IFBLK: throw ImageIOError.unreadable(path: path, reason: "it is a device, not a regular file")
        default: throw ImageIOError.unreadable(path: path, reason: "it is not a regular file")
        }
        let limit = ImageLimits.maxFileBytes
        guard st.st_size <= limit else { throw ImageIOError.fileTooLarge(path: path, bytes: Int(st.st_size)) }
        // Read to the end (the file may have grown since fstat), never past the limit.
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var filled = 0
        while true {
            if filled == bytes.count {
                guard bytes.count <= limit else { throw ImageIOError.fileTooLarge(path: path, bytes: bytes.count) }
                bytes += [UInt8](repeating: 0, count: min(bytes.count, limit + 1 - bytes.count))
            }
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw ImageIOError.unreadable(path: path, reason: String(cString: strerror(errno))) }
            if n == 0 { break }
            filled += n
        }
        bytes.removeSubrange(filled...)
        return bytes
    }
}

// MARK: Writing

extension RGBImage {
    /// Writes a PNG with optional text chunks (tEXt, or iTXt for values outside Latin-1).
    public func writePNG(path: String, text: [(key: String, value: String)] = [], compressionLevel: Int = 6) throws {
        try Self.writeAtomically(PNGCodec.encode(self, text: text, compressionLevel: compressionLevel), to: path)
    }

    /// Writes a baseline JPEG (4:2:0 chroma subsampling) at `quality` 1...100.
    public func writeJPEG(path: String, quality: Int = 95) throws {
        try Self.writeAtomically(JPEGCodec.encode(self, quality: quality), to: path)
    }

    /// Writes through a temporary file and a rename, so a crash never leaves half an image.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw ImageIOError.writeFailed(path: path, reason: (error as NSError).localizedDescription)
        }
    }
}

// MARK: Float conversion

extension RGBImage {
    /// Planar float pixels `[3][height][width]` scaled to [-1, 1] the way torchvision's
    /// `ToTensor()` + `Normalize([0.5], [0.5])` does: `(p / 255 - 0.5) / 0.5` in float32.
    public func planarFloats() -> [Float] {
        let n = width * height
        var out = [Float](repeating: 0, count: 3 * n)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<n {
                    for c in 0..<3 { dst[c * n + i] = (Float(src[3 * i + c]) / 255 - 0.5) / 0.5 }
                }
            }
        }
        return out
    }

    /// The inverse for generated images: planar `[3][height][width]` floats in [-1, 1]
    /// (a VAE decode) to 8-bit, as diffusers' image processor does:
    /// `round(clamp(x / 2 + 0.5, 0, 1) * 255)`, rounding half to even like numpy.
    public init(planarFloats values: [Float], width: Int, height: Int) {
        let n = width * height
        precondition(values.count == 3 * n, "planarFloats needs 3x\(height)x\(width) values, got \(values.count)")
        var p = [UInt8](repeating: 0, count: 3 * n)
        for i in 0..<n {
            for c in 0..<3 {
                let v = values[c * n + i]
                let unit = v.isNaN ? 0 : min(max(v / 2 + 0.5, 0), 1)
                p[3 * i + c] = UInt8((unit * 255).rounded(.toNearestOrEven))
            }
        }
        self.init(width: width, height: height, pixels: p)
    }
}
