import Foundation
import XCTest
@testable import KoalaImageIO

/// Photos that libjpeg would decode with only a warning (the missing part painted
/// gray), and files that are not regular or too large to read (issue 13, item 6).
final class CorruptPhotoTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-photo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A 320x320 photo-like JPEG (smooth gradients plus deterministic noise).
    func photoJPEG(seed: UInt64 = 1) throws -> [UInt8] {
        let side = 320
        var state = seed
        var pixels = [UInt8](repeating: 0, count: side * side * 3)
        for i in 0..<(side * side) {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let noise = Int(state >> 59)
            let (x, y) = (i % side, i / side)
            pixels[3 * i] = UInt8(truncatingIfNeeded: x / 2 + noise)
            pixels[3 * i + 1] = UInt8(truncatingIfNeeded: y / 2 + noise)
            pixels[3 * i + 2] = UInt8(truncatingIfNeeded: (x + y) / 3 + noise)
        }
        return try JPEGCodec.encode(RGBImage(width: side, height: side, pixels: pixels), quality: 90)
    }

    /// Offset of the first byte after marker `code`'s segment header (FF code, length).
    func segment(_ bytes: [UInt8], _ code: UInt8) -> Int? {
        var i = 2
        while i + 4 <= bytes.count, bytes[i] == 0xFF {
            let length = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            if bytes[i + 1] == code { return i + 4 }
            i += 2 + length
        }
        return nil
    }

    func assertCorrupt(_ bytes: [UInt8], _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try RGBImage.decode(bytes, path: "crafted.jpg"), file: file, line: line) { error in
            guard case .corrupt(let path, .jpeg, let detail)? = error as? ImageIOError else {
                return XCTFail("expected a corrupt-JPEG error, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(path, "crafted.jpg", file: file, line: line)
            XCTAssertTrue(detail.contains(needle), "\(detail) lacks '\(needle)'", file: file, line: line)
        }
    }

    func testIntactPhotoStillDecodes() throws {
        let image = try RGBImage.decode(try photoJPEG())
        XCTAssertEqual([image.width, image.height], [320, 320])
    }

    /// The SOF says 13000x13000 over 320x320 worth of data: libjpeg warns "premature end
    /// of data segment" and would return 13000x13000 pixels, nearly all gray.
    func testHeaderClaimingMorePixelsThanTheDataHoldsIsRefused() throws {
        var bytes = try photoJPEG()
        let sof = try XCTUnwrap(segment(bytes, 0xC0))
        // SOF0 payload: precision, height (2 bytes), width (2 bytes).
        bytes.replaceSubrange(sof + 1..<sof + 5, with: [0x32, 0xC8, 0x32, 0xC8])  // 13000 = 0x32C8
        assertCorrupt(bytes, "13000x13000")
        // Within the plausibility bound the same lie is caught by libjpeg's warning.
        bytes.replaceSubrange(sof + 1..<sof + 5, with: [0x02, 0x80, 0x02, 0x80])  // 640x640
        assertCorrupt(bytes, "premature end of data segment")
    }

    /// 200 bytes of the entropy-coded data flipped (seeded): libjpeg warns about a bad
    /// Huffman code or an early marker and would return a picture with garbage or gray.
    func testFlippedEntropyBytesAreRefused() throws {
        let original = try photoJPEG()
        let sos = try XCTUnwrap(segment(original, 0xDA))
        let scanStart = sos + Int(original[sos - 2]) << 8 + Int(original[sos - 1]) - 2
        var refused = 0
        for seed: UInt64 in 1...8 {
            var bytes = original
            var state = seed
            for _ in 0..<200 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                let i = scanStart + Int((state >> 33) % UInt64(bytes.count - 2 - scanStart))
                bytes[i] ^= UInt8(truncatingIfNeeded: (state >> 20) | 1)
            }
            do { _ = try RGBImage.decode(bytes, path: "crafted.jpg") } catch let e as ImageIOError {
                guard case .corrupt = e else { XCTFail("seed \(seed): \(e)"); continue }
                refused += 1
            }
        }
        // Damage that happens to leave every Huffman code valid decodes without a
        // warning and cannot be told from a photo; every file that makes libjpeg warn is refused.
        XCTAssertGreaterThanOrEqual(refused, 6)
    }

    func testFIFOIsRefusedWithoutBlocking() throws {
        let fifo = dir.appendingPathComponent("photo.jpg").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        // Code that opens the FIFO blocks until a writer comes; this one comes after 3 s,
        // so such code fails the assertion (an empty file) instead of hanging.
        let writer = Thread {
            Thread.sleep(forTimeInterval: 3)
            let fd = open(fifo, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
        }
        writer.start()
        XCTAssertThrowsError(try RGBImage.load(path: fifo)) { error in
            XCTAssertEqual(error as? ImageIOError, .unreadable(path: fifo, reason: "it is a FIFO (named pipe), not a regular file"))
        }
    }

    func testDevicesAndOversizedFilesAreRefusedBeforeReading() throws {
        XCTAssertThrowsError(try RGBImage.load(path: "/dev/zero")) { error in
            XCTAssertEqual(error as? ImageIOError, .unreadable(path: "/dev/zero", reason: "it is a device, not a regular file"))
        }
        let big = dir.appendingPathComponent("big.jpg").path
        FileManager.default.createFile(atPath: big, contents: Data([0xFF, 0xD8, 0xFF, 0xE0]))
        XCTAssertEqual(truncate(big, off_t(ImageLimits.maxFileBytes + 1)), 0)  // sparse
        XCTAssertThrowsError(try RGBImage.load(path: big)) { error in
            XCTAssertEqual(error as? ImageIOError, .fileTooLarge(path: big, bytes: ImageLimits.maxFileBytes + 1))
        }
    }
}
