import CImageCodecs

/// JPEG decoding and encoding through libjpeg(-turbo).
public enum JPEGCodec {
    /// Decodes baseline or progressive JPEG in YCbCr, grayscale, RGB, CMYK or YCCK to RGB.
    /// Does not apply EXIF orientation (`RGBImage.decode` does).
    public static func decode(_ bytes: [UInt8], path: String = "<memory>") throws -> RGBImage {
        try decodeWithSource(bytes, path: path).image
    }

    /// `decode` plus what the file held: colour components (1 gray, 3, 4 CMYK/YCCK)
    /// and whether it was progressive.
    static func decodeWithSource(_ bytes: [UInt8], path: String) throws -> (image: RGBImage, components: Int, progressive: Bool) {
        var out = kb_image()
        let status = bytes.withUnsafeBufferPointer { kb_jpeg_decode($0.baseAddress, $0.count, &out) }
        defer { kb_image_free(&out) }
        try check(status, out, path: path, format: .jpeg)
        let count = Int(out.width) * Int(out.height) * 3
        let image = RGBImage(width: Int(out.width), height: Int(out.height),
                             pixels: Array(UnsafeBufferPointer(start: out.pixels, count: count)))
        return (image, Int(out.source_components), out.progressive != 0)
    }

    /// Encodes as a baseline JPEG with 4:2:0 chroma subsampling; `quality` is clamped to 1...100.
    public static func encode(_ image: RGBImage, quality: Int = 95) throws -> [UInt8] {
        var out = kb_buffer()
        let status = image.pixels.withUnsafeBufferPointer {
            kb_jpeg_encode($0.baseAddress, Int32(image.width), Int32(image.height), Int32(quality), &out)
        }
        defer { kb_buffer_free(&out) }
        guard status == KB_IMAGE_OK else {
            throw ImageIOError.encodeFailed(format: .jpeg, detail: message(of: &out.message))
        }
        return Array(UnsafeBufferPointer(start: out.data, count: out.size))
    }
}

/// Turns a C status into the matching `ImageIOError`.
func check(_ status: kb_image_status, _ out: kb_image, path: String, format: ImageFormat) throws {
    var image = out
    switch status {
    case KB_IMAGE_OK: return
    case KB_IMAGE_TRUNCATED: throw ImageIOError.truncated(path: path, format: format)
    case KB_IMAGE_TOO_LARGE: throw ImageIOError.tooLarge(path: path, width: Int(image.width), height: Int(image.height))
    case KB_IMAGE_NO_MEMORY: throw ImageIOError.corrupt(path: path, format: format, detail: "out of memory: " + message(of: &image.message))
    default: throw ImageIOError.corrupt(path: path, format: format, detail: message(of: &image.message))
    }
}

/// Reads a NUL-terminated C message buffer (a fixed-size array imported as a tuple).
func message<T>(of tuple: inout T) -> String {
    withUnsafeBytes(of: &tuple) { raw in
        let bytes = raw.bindMemory(to: UInt8.self)
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        let text = String(decoding: bytes[..<end], as: UTF8.self)
        return text.isEmpty ? "unknown error" : text
    }
}
