import Foundation
import NIOCore
@testable import KoalaServer
import XCTest

/// The multipart/form-data reader on crafted bodies, and the server staying up when a
/// stranger sends one.
final class MultipartParserTests: ServerTestCase {
    func parts(_ text: String, boundary: String = "b0undary") throws -> [(headers: [String], body: String)] {
        try MultipartParser.parts(of: ByteBuffer(bytes: Array(text.utf8)), boundary: boundary).map { part in
            (part.headers.map { "\($0.0)=\($0.1)" }, String(buffer: part.body))
        }
    }

    func malformed(_ bytes: [UInt8], boundary: String = "b0undary") -> String? {
        do { _ = try MultipartParser.parts(of: ByteBuffer(bytes: bytes), boundary: boundary); return nil } catch { return "\(error)" }
    }

    func testPartsWithPreambleEpilogueAndPadding() throws {
        let body = "ignored preamble\r\n--b0undary  \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\none\r\n--b0undary\r\n"
            + "Content-Disposition: form-data; name=\"photos\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
            + "two\r\n--b0und\r\nstill two\r\n--b0undary--\r\nignored epilogue"
        let p = try parts(body)
        XCTAssertEqual(p.map(\.body), ["one", "two\r\n--b0und\r\nstill two"])
        XCTAssertEqual(p[1].headers, ["Content-Disposition=form-data; name=\"photos\"; filename=\"x.png\"", "Content-Type=image/png"])
        XCTAssertEqual(try parts("--b0undary--").count, 0, "an empty form")
        XCTAssertEqual(try parts("--b0undary\r\n\r\n\r\n--b0undary--").map(\.body), [""], "a part without headers or bytes")
    }

    func testCraftedBodiesAreRefused() {
        let start = Array("--b0undary\r\n".utf8)
        XCTAssertEqual(malformed(start + [0xC3, 0xA9] + Array(": x\r\n\r\nbody\r\n--b0undary--".utf8)),
                       "a part has a header line that is not 'Name: value'", "a header name above ASCII (multipart-kit trapped on it)")
        XCTAssertEqual(malformed(Array("--b0undary\r\nNo-Colon\r\n\r\nx\r\n--b0undary--".utf8)), "a part has a header line that is not 'Name: value'")
        XCTAssertEqual(malformed(Array("--b0undary\r\n: empty name\r\n\r\nx\r\n--b0undary--".utf8)), "a part has a header line that is not 'Name: value'")
        XCTAssertEqual(malformed(Array("--b0undary\r\nA: b\r\n\r\nno end".utf8)), "a part does not end with the boundary delimiter")
        XCTAssertEqual(malformed(Array("no delimiter at all".utf8)), "no boundary delimiter")
        XCTAssertEqual(malformed(Array("--b0undaryX".utf8)), "a boundary delimiter is not followed by a line break")
        XCTAssertEqual(malformed(Array("--b0undary".utf8)), "a boundary delimiter is not followed by a line break")
        XCTAssertEqual(malformed(start + Array(repeating: UInt8(ascii: "a"), count: 20_000)),
                       "a part's headers do not end within 16384 bytes")
        let many = String(repeating: "--b0undary\r\n\r\nx\r\n", count: 1001) + "--b0undary--"
        XCTAssertEqual(malformed(Array(many.utf8)), "more than 1000 parts")
    }

    /// The request that took the server down under multipart-kit: now a 400, and the
    /// server answers the next request.
    func testTheServerAnswersACraftedFormWithA400() async throws {
        let body = Data("--b0undary\r\n".utf8) + Data([0xFF]) + Data(": x\r\n\r\nbody\r\n--b0undary--\r\n".utf8)
        let r = try await request("POST", "/v1/subjects", key: keyA, body: body, contentType: "multipart/form-data; boundary=b0undary")
        XCTAssertEqual(r.status, 400, r.text)
        XCTAssertEqual(r.errorCode, "invalid_form")
        let after = try await get("/v1/subjects", key: keyA)
        XCTAssertEqual(after.status, 200)
    }
}
