import Foundation
import NIOCore

/// A `multipart/form-data` body split into its text fields and files.
struct MultipartForm {
    struct File {
        /// The form field (`photos`).
        var field: String
        /// The client's file name, if it sent one.
        var filename: String?
        var bytes: ByteBuffer
    }

    var fields: [String: String] = [:]
    var files: [File] = []

    /// Parses `body` sent with `contentType` (which names the boundary). Throws `APIError`
    /// 400s for a body that is not such a form.
    init(contentType: String?, body: ByteBuffer) throws {
        guard let contentType, contentType.lowercased().hasPrefix("multipart/form-data"),
              let boundary = Self.parameter("boundary", in: contentType), !boundary.isEmpty, boundary.utf8.count <= 200 else {
            throw APIError.badRequest("invalid_form", "send the fields as multipart/form-data (Content-Type: multipart/form-data; boundary=…).")
        }
        let parts: [MultipartPart]
        do {
            parts = try MultipartParser.parts(of: body, boundary: boundary)
        } catch {
            throw APIError.badRequest("invalid_form", "the multipart/form-data body is malformed (\(error)).")
        }
        for part in parts {
            guard let disposition = part.headers.first(where: { $0.0.lowercased() == "content-disposition" })?.1,
                  let name = Self.parameter("name", in: disposition) else {
                throw APIError.badRequest("invalid_form", "a part of the form has no Content-Disposition name.")
            }
            if let filename = Self.parameter("filename", in: disposition) {
                files.append(File(field: name, filename: filename, bytes: part.body))
            } else if name == "photos" {
                files.append(File(field: name, filename: nil, bytes: part.body))
            } else {
                guard let bytes = part.body.getBytes(at: part.body.readerIndex, length: part.body.readableBytes),
                      let text = String(validating: bytes, as: UTF8.self) else {
                    throw APIError.badRequest("invalid_form", "the form field \(name) is not UTF-8 text.")
                }
                if fields[name] != nil { throw APIError.badRequest("invalid_form", "the form field \(name) is given twice.") }
                fields[name] = text
            }
        }
    }

    /// The value of `name=value` or `name="value"` among a header's `;`-separated
    /// parameters (case-insensitive name, `\"` escapes in quoted values).
    static func parameter(_ name: String, in header: String) -> String? {
        var rest = Substring(header)
        while let semicolon = rest.firstIndex(of: ";") {
            rest = rest[rest.index(after: semicolon)...].drop(while: { $0 == " " || $0 == "\t" })
            guard let equals = rest.firstIndex(of: "=") else { return nil }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            var value = rest[rest.index(after: equals)...]
            var parsed = ""
            if value.first == "\"" {
                value = value.dropFirst()
                var escaped = false
                var end = value.endIndex
                for i in value.indices {
                    let c = value[i]
                    if escaped { parsed.append(c); escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { end = i; break } else { parsed.append(c) }
                }
                rest = end < value.endIndex ? value[value.index(after: end)...] : ""
            } else {
                let end = value.firstIndex(of: ";") ?? value.endIndex
                parsed = value[..<end].trimmingCharacters(in: .whitespaces)
                rest = value[end...]
            }
            if key == name { return parsed }
        }
        return nil
    }
}
