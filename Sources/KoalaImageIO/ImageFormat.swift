/// The image formats KoalaBooth reads, recognised by their first bytes (never by the
/// file extension).
public enum ImageFormat: String, Sendable, Equatable {
    case jpeg
    case png

    public var name: String { self == .jpeg ? "JPEG" : "PNG" }

    /// What the first bytes of a file say it is.
    public enum Sniffed: Equatable, Sendable {
        case supported(ImageFormat)
        /// A known image format KoalaBooth does not decode.
        case unsupported(String)
        /// Not an image; the associated value guesses what it is, if it can.
        case notAnImage(String?)
    }

    /// Identifies a file from its leading bytes (at least 12 are needed to tell all
    /// formats apart; fewer work for JPEG and PNG).
    public static func sniff<C: Collection>(_ bytes: C) -> Sniffed where C.Element == UInt8 {
        let b = Array(bytes.prefix(16))
        func starts(_ prefix: [UInt8], at offset: Int = 0) -> Bool {
            b.count >= offset + prefix.count && Array(b[offset..<offset + prefix.count]) == prefix
        }
        if starts([0xFF, 0xD8, 0xFF]) { return .supported(.jpeg) }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .supported(.png) }
        if starts(Array("GIF8".utf8)) { return .unsupported("GIF") }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return .unsupported("WebP") }
        if starts(Array("ftyp".utf8), at: 4) {
            let brand = b.count >= 12 ? String(decoding: b[8..<12], as: UTF8.self) : ""
            if ["avif", "avis"].contains(brand) { return .unsupported("AVIF") }
            if ["heic", "heix", "hevc", "heim", "heis", "mif1", "msf1"].contains(brand) { return .unsupported("HEIC/HEIF") }
            return .notAnImage("a video or other ISO media file")
        }
        if starts([0x42, 0x4D]) && b.count >= 14 { return .unsupported("BMP") }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return .unsupported("TIFF (or camera raw)") }
        if starts([0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20]) || starts([0xFF, 0x4F, 0xFF, 0x51]) { return .unsupported("JPEG 2000") }
        if starts([0xFF, 0x0A]) || starts([0x00, 0x00, 0x00, 0x0C, 0x4A, 0x58, 0x4C, 0x20]) { return .unsupported("JPEG XL") }
        if starts(Array("8BPS".utf8)) { return .unsupported("Photoshop (PSD)") }
        if starts(Array("%PDF".utf8)) { return .notAnImage("a PDF document") }
        if starts([0x50, 0x4B, 0x03, 0x04]) { return .notAnImage("a ZIP archive") }
        return .notAnImage(looksLikeText(b) ? textKind(b) : nil)
    }

    private static func looksLikeText(_ b: [UInt8]) -> Bool {
        !b.isEmpty && b.allSatisfy { $0 == 9 || $0 == 10 || $0 == 13 || ($0 >= 32 && $0 != 127) }
    }

    private static func textKind(_ b: [UInt8]) -> String {
        let head = String(decoding: b, as: UTF8.self).lowercased().trimmingPrefix { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        if head.hasPrefix("<!doctype html") || head.hasPrefix("<html") { return "an HTML page, perhaps a saved download page" }
        if head.hasPrefix("<svg") || head.hasPrefix("<?xml") { return "an XML/SVG text file" }
        return "a text file"
    }
}
