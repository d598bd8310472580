import Foundation

/// Why an image could not be read or written. Each description names the file, the
/// problem and what to do about it, so the CLI can print it as is.
public enum ImageIOError: Error, Equatable, CustomStringConvertible, LocalizedError {
    case fileNotFound(path: String)
    case unreadable(path: String, reason: String)
    case emptyFile(path: String)
    /// More bytes than `ImageLimits.maxFileBytes`: refused before reading.
    case fileTooLarge(path: String, bytes: Int)
    /// The bytes match no image format; `looksLike` names what they seem to be (text, HTML...).
    case notAnImage(path: String, looksLike: String?)
    /// A real image format that KoalaBooth does not decode (HEIC, WebP, GIF...).
    case unsupportedFormat(path: String, format: String)
    case truncated(path: String, format: ImageFormat)
    case corrupt(path: String, format: ImageFormat, detail: String)
    case tooSmall(path: String, width: Int, height: Int, minimumSide: Int)
    case tooLarge(path: String, width: Int, height: Int)
    case invalidTextChunk(key: String, reason: String)
    case encodeFailed(format: ImageFormat, detail: String)
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "\(path): no such file. Check the path (relative paths start from the current directory)."
        case .unreadable(let path, let reason):
            return "\(path): cannot be read (\(reason)). Check that it is a regular file you have permission to read."
        case .emptyFile(let path):
            return "\(path): the file is empty (0 bytes). It was probably not fully copied or downloaded; copy it again."
        case .fileTooLarge(let path, let bytes):
            return "\(path): the file is \(bytes) bytes, more than the \(ImageLimits.maxFileBytes) bytes KoalaBooth reads for a photo. Check that it is a photo; downscale or re-encode it."
        case .notAnImage(let path, let looksLike):
            let what = looksLike.map { " (it looks like \($0))" } ?? ""
            return "\(path): not a JPEG or PNG image\(what); the file extension does not matter, its contents do. Use a JPEG or PNG photo."
        case .unsupportedFormat(let path, let format):
            return "\(path): \(format) images are not supported. Convert it to JPEG or PNG first (for example `convert \"\(path)\" photo.png` with ImageMagick)."
        case .truncated(let path, let format):
            return "\(path): the \(format.name) file is truncated (it ends before the image does). It was probably cut off while copying or downloading; get a complete copy."
        case .corrupt(let path, let format, let detail):
            return "\(path): the \(format.name) data is corrupt (\(detail)). Re-export the image or use another photo."
        case .tooSmall(let path, let width, let height, let minimumSide):
            return "\(path): the image is \(width)x\(height) pixels, smaller than the minimum \(minimumSide) pixels on its shorter side. Use a larger photo (upscaling would blur the subject)."
        case .tooLarge(let path, let width, let height):
            return "\(path): the image is \(width)x\(height) pixels, more than KoalaBooth decodes (\(ImageLimits.maxPixels) pixels). Downscale it first."
        case .invalidTextChunk(let key, let reason):
            return "PNG text key '\(key)': \(reason). Use a key of 1-79 Latin-1 characters without leading, trailing or double spaces, and values without NUL characters."
        case .encodeFailed(let format, let detail):
            return "encoding \(format.name) failed: \(detail)."
        case .writeFailed(let path, let reason):
            return "\(path): cannot write the image (\(reason)). Check that the directory exists and is writable, and that the disk is not full."
        }
    }

    public var errorDescription: String? { description }
}

/// Limits applied while decoding.
public enum ImageLimits {
    /// Images with more pixels are refused (the same bound Pillow enforces against
    /// decompression bombs).
    public static let maxPixels = 178_956_970
    /// Larger files are refused before reading: far above any photo's file.
    public static let maxFileBytes = 256 << 20
}
