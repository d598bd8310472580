import CImageCodecs

/// PNG decoding and encoding through libpng, including text chunks (tEXt/zTXt/iTXt).
public enum PNGCodec {
    /// A decoded PNG: the RGB pixels (alpha composited on white) and its text chunks in
    /// file order.
    public struct Decoded: Sendable {
        public var image: RGBImage
        public var text: [(key: String, value: String)]
    }

    /// Decodes any PNG (1-16 bit, palette, gray, alpha, tRNS, interlaced) to RGB. 16-bit
    /// samples keep their high byte; transparency is composited on white.
    public static func decode(_ bytes: [UInt8], path: String = "<memory>") throws -> Decoded {
        var out = kb_image()
        var texts = kb_png_text_list()
        let status = bytes.withUnsafeBufferPointer { kb_png_decode($0.baseAddress, $0.count, &out, &texts) }
        defer { kb_image_free(&out); kb_png_text_free(&texts) }
        try check(status, out, path: path, format: .png)
        let count = Int(out.width) * Int(out.height) * 3
        let image = RGBImage(width: Int(out.width), height: Int(out.height),
                             pixels: Array(UnsafeBufferPointer(start: out.pixels, count: count)))
        var text: [(key: String, value: String)] = []
        for i in 0..<Int(texts.count) {
            let item = texts.items[i]
            text.append((latin1(item.key), item.utf8 != 0 ? String(cString: item.value) : latin1(item.value)))
        }
        return Decoded(image: image, text: text)
    }

    /// The text chunks of a PNG file, in file order.
    public static func readText(path: String) throws -> [(key: String, value: String)] {
        let bytes = try RGBImage.readFile(path)
        if bytes.isEmpty { throw ImageIOError.emptyFile(path: path) }
        guard case .supported(.png) = ImageFormat.sniff(bytes) else {
            throw ImageIOError.corrupt(path: path, format: .png, detail: "the file is not a PNG, so it has no PNG text chunks")
        }
        return try decode(bytes, path: path).text
    }

    /// Encodes an 8-bit RGB PNG. Each text pair becomes a tEXt chunk, or an iTXt chunk
    /// (UTF-8) when the value has characters outside Latin-1. Keys must be 1-79 Latin-1
    /// characters (the PNG rule); values must not contain NUL.
    public static func encode(_ image: RGBImage, text: [(key: String, value: String)] = [],
                              compressionLevel: Int = 6) throws -> [UInt8] {
        var keys: [[CChar]] = [], values: [[CChar]] = [], utf8: [Bool] = []
        for (key, value) in text {
            try validate(key: key, value: value)
            keys.append(latin1Bytes(key)! + [0])
            if let bytes = latin1Bytes(value) {
                values.append(bytes + [0]); utf8.append(false)
            } else {
                values.append(value.utf8.map { CChar(bitPattern: $0) } + [0]); utf8.append(true)
            }
        }
        // Pin every string's storage for the duration of the call.
        let keyPointers = keys.map { k -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: k.count); p.initialize(from: k, count: k.count); return p
        }
        let valuePointers = values.map { v -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: v.count); p.initialize(from: v, count: v.count); return p
        }
        defer { keyPointers.forEach { $0.deallocate() }; valuePointers.forEach { $0.deallocate() } }
        let items = (0..<keys.count).map {
            kb_png_text_in(key: keyPointers[$0], value: valuePointers[$0], utf8: utf8[$0] ? 1 : 0)
        }
        var out = kb_buffer()
        let status = image.pixels.withUnsafeBufferPointer { px in
            items.withUnsafeBufferPointer { t in
                kb_png_encode(px.baseAddress, Int32(image.width), Int32(image.height), Int32(compressionLevel),
                              t.baseAddress, Int32(t.count), &out)
            }
        }
        defer { kb_buffer_free(&out) }
        guard status == KB_IMAGE_OK else {
            throw ImageIOError.encodeFailed(format: .png, detail: message(of: &out.message))
        }
        return Array(UnsafeBufferPointer(start: out.data, count: out.size))
    }

    private static func validate(key: String, value: String) throws {
        guard let bytes = latin1Bytes(key) else {
            throw ImageIOError.invalidTextChunk(key: key, reason: "the key has characters outside Latin-1")
        }
        guard (1...79).contains(bytes.count) else {
            throw ImageIOError.invalidTextChunk(key: key, reason: "the key is \(bytes.count) characters long, PNG allows 1 to 79")
        }
        let printable = bytes.allSatisfy { let u = UInt8(bitPattern: $0); return (32...126).contains(u) || u >= 161 }
        guard printable, key.first != " ", key.last != " ", !key.contains("  ") else {
            throw ImageIOError.invalidTextChunk(key: key, reason: "the key has control characters or misplaced spaces")
        }
        guard !value.utf8.contains(0) else {
            throw ImageIOError.invalidTextChunk(key: key, reason: "the value contains a NUL character")
        }
    }

    private static func latin1Bytes(_ s: String) -> [CChar]? {
        var out: [CChar] = []
        for scalar in s.unicodeScalars {
            guard scalar.value < 256 else { return nil }
            out.append(CChar(bitPattern: UInt8(scalar.value)))
        }
        return out
    }

    private static func latin1(_ p: UnsafeMutablePointer<CChar>) -> String {
        var s = String.UnicodeScalarView()
        var q = p
        while q.pointee != 0 {
            s.append(Unicode.Scalar(UInt8(bitPattern: q.pointee)))
            q += 1
        }
        return String(s)
    }
}
