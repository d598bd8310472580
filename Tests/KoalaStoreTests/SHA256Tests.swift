import Foundation
@testable import KoalaStore
import XCTest

final class SHA256Tests: XCTestCase {
    // FIPS 180-4 examples (published with the standard) and the long-message vector.
    func testStandardVectors() {
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hex(Array("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu".utf8)),
                       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
        XCTAssertEqual(SHA256.hex([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Feeding the same bytes in uneven pieces (across block and padding boundaries)
    /// gives the same digest as one call.
    func testIncrementalUpdatesMatchOneShot() {
        for length in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 200] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            var h = SHA256()
            var i = 0, step = 1
            while i < bytes.count {
                let end = min(bytes.count, i + step)
                h.update(Array(bytes[i..<end]))
                i = end
                step = step * 3 % 17 + 1
            }
            XCTAssertEqual(SHA256.hexString(h.finalize()), SHA256.hex(bytes), "length \(length)")
        }
    }

    /// Agrees with coreutils' sha256sum on a file, where the tool is installed.
    func testFileDigestMatchesSha256sum() throws {
        let tool = "/usr/bin/sha256sum"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: tool), "sha256sum not installed")
        let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("sha-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: url) }
        let bytes = (0..<(3 << 20) + 12345).map { UInt8(truncatingIfNeeded: ($0 * 7919) >> 3) }
        try Data(bytes).write(to: url)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = [url.path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let (hex, size) = try SHA256.hexOfFile(atPath: url.path)
        XCTAssertEqual(size, bytes.count)
        XCTAssertEqual(hex, String(text.prefix(64)))
    }
}
