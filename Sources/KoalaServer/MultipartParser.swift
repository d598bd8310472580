import Foundation
import NIOCore

/// One part of a multipart/form-data body: its header lines and its bytes (a slice of
/// the request body, not a copy).
struct MultipartPart {
    var headers: [(String, String)]
    var body: ByteBuffer
}

/// Splits a multipart/form-data body (RFC 7578, in RFC 2046's syntax) into its parts.
/// Strict where strangers' bytes could hurt: header names must be HTTP token
/// characters, a part's header block and the number of parts are bounded, and a body
/// that does not end with the closing delimiter is refused. (multipart-kit 4.7.1, used
/// before, trapped on a header-name byte above 127 — one request took the server down;
/// `tools/fuzz-api` found it.) The preamble and epilogue are ignored, as the RFC says.
enum MultipartParser {
    struct Malformed: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static let maxHeaderBlockBytes = 16 * 1024
    static let maxParts = 1000

    static func parts(of body: ByteBuffer, boundary: String) throws -> [MultipartPart] {
        let delimiter = Array("--\(boundary)".utf8)
        let ranges = try body.withUnsafeReadableBytes { try split($0, delimiter: delimiter) }
        return ranges.map { MultipartPart(headers: $0.headers, body: body.getSlice(at: body.readerIndex + $0.start, length: $0.count)!) }
    }

    /// The parts' headers and the offsets of their bodies in `bytes`.
    private static func split(_ bytes: UnsafeRawBufferPointer, delimiter: [UInt8]) throws -> [(headers: [(String, String)], start: Int, count: Int)] {
        let crlf: [UInt8] = [13, 10]
        var i: Int
        if bytes.starts(with: delimiter) {
            i = delimiter.count
        } else if let found = find(crlf + delimiter, in: bytes, from: 0) {
            i = found + 2 + delimiter.count
        } else {
            throw Malformed("no boundary delimiter")
        }
        var parts: [(headers: [(String, String)], start: Int, count: Int)] = []
        while true {
            if bytes[i...].starts(with: [45, 45]) { return parts }  // "--": the closing delimiter
            while i < bytes.count, bytes[i] == 32 || bytes[i] == 9 { i += 1 }  // transport padding
            guard bytes[i...].starts(with: crlf) else { throw Malformed("a boundary delimiter is not followed by a line break") }
            i += 2
            guard parts.count < maxParts else { throw Malformed("more than \(maxParts) parts") }

            var headers: [(String, String)] = []
            let headerStart = i
            while true {
                guard let end = find(crlf, in: bytes, from: i), end - headerStart <= maxHeaderBlockBytes else {
                    throw Malformed("a part's headers do not end within \(maxHeaderBlockBytes) bytes")
                }
                if end == i { i += 2; break }  // the blank line before the body
                let line = bytes[i..<end]
                guard let colon = line.firstIndex(of: 58), colon > i, line[..<colon].allSatisfy(isTokenByte) else {
                    throw Malformed("a part has a header line that is not 'Name: value'")
                }
                headers.append((String(decoding: line[..<colon], as: UTF8.self),
                                String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)))
                i = end + 2
            }
            let closing = crlf + delimiter
            guard let end = find(closing, in: bytes, from: i) else { throw Malformed("a part does not end with the boundary delimiter") }
            parts.append((headers, i, end - i))
            i = end + closing.count
        }
    }

    /// The offset of the first `pattern` in `bytes` at or after `from`.
    private static func find(_ pattern: [UInt8], in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard let first = pattern.first, bytes.count - from >= pattern.count else { return nil }
        var i = from
        let last = bytes.count - pattern.count
        while i <= last {
            guard let hit = bytes[i...last].firstIndex(of: first) else { return nil }
            if bytes[hit..<(hit + pattern.count)].elementsEqual(pattern) { return hit }
            i = hit + 1
        }
        return nil
    }

    /// RFC 9110's `tchar`.
    private static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case 48...57, 65...90, 97...122: true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: true
        default: false
        }
    }
}
