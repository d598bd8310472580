import Foundation
import XCTest
import KoalaTensor
import KoalaTestSupport
@testable import KoalaImageIO

/// Reference pixels from tools/reference/fixtures_imageio.py (Pillow), images in
/// Tests/Fixtures/images/.
final class KoalaImageIOTests: XCTestCase {
    static let images = Fixtures.directory.appendingPathComponent("images")
    nonisolated(unsafe) static var reference: SafeTensorsFile?

    func fixture() throws -> SafeTensorsFile {
        if let f = Self.reference { return f }
        let f = try Fixtures.open("imageio")
        Self.reference = f
        return f
    }

    func imagePath(_ name: String) -> String { Self.images.appendingPathComponent(name).path }

    /// Pillow's expected image stored as float [H, W, 3].
    func expected(_ key: String) throws -> RGBImage {
        let t = try fixture().tensor(key)
        precondition(t.shape.count == 3 && t.shape[2] == 3, "\(key) has shape \(t.shape)")
        return RGBImage(width: t.shape[1], height: t.shape[0], pixels: t.toArray().map { UInt8($0) })
    }

    struct Difference { var max: Int; var mean: Double; var differing: Int }

    func difference(_ a: RGBImage, _ b: RGBImage) -> Difference {
        var d = Difference(max: 0, mean: 0, differing: 0)
        var total = 0
        for i in 0..<a.pixels.count {
            let e = abs(Int(a.pixels[i]) - Int(b.pixels[i]))
            d.max = Swift.max(d.max, e)
            total += e
            if e != 0 { d.differing += 1 }
        }
        d.mean = Double(total) / Double(a.pixels.count)
        return d
    }

    /// Checks size, then the largest and mean per-sample difference.
    func assertMatches(_ actual: RGBImage, _ key: String, maxDiff: Int, meanDiff: Double = 0.5,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let e = try expected(key)
        XCTAssertEqual(actual.width, e.width, "\(key) width", file: file, line: line)
        XCTAssertEqual(actual.height, e.height, "\(key) height", file: file, line: line)
        guard actual.width == e.width && actual.height == e.height else { return }
        let d = difference(actual, e)
        XCTAssertLessThanOrEqual(d.max, maxDiff, "\(key): max difference", file: file, line: line)
        XCTAssertLessThanOrEqual(d.mean, meanDiff, "\(key): mean difference", file: file, line: line)
    }

    // MARK: Decoding

    func testJPEGDecodeMatchesPillow() throws {
        // libjpeg-turbo 2.1 here, 3.x in Pillow's wheel: the same integer IDCT and fancy
        // upsampling, and today the pixels are identical; the tolerance leaves room for
        // another libjpeg build.
        for name in ["jpeg_baseline", "jpeg_progressive", "jpeg_444", "jpeg_gray", "jpeg_cmyk"] {
            try assertMatches(RGBImage.load(path: imagePath(name + ".jpg")), name, maxDiff: 2, meanDiff: 0.25)
        }
    }

    func testJPEGSourceKinds() throws {
        func source(_ name: String) throws -> (Int, Bool) {
            let r = try JPEGCodec.decodeWithSource(RGBImage.readFile(imagePath(name)), path: name)
            return (r.components, r.progressive)
        }
        XCTAssertTrue(try source("jpeg_gray.jpg") == (1, false))
        XCTAssertTrue(try source("jpeg_cmyk.jpg") == (4, false))
        XCTAssertTrue(try source("jpeg_progressive.jpg") == (3, true))
        XCTAssertTrue(try source("jpeg_baseline.jpg") == (3, false))
    }

    func testEXIFOrientation() throws {
        for o in 1...8 {
            let path = imagePath("jpeg_orientation_\(o).jpg")
            XCTAssertEqual(EXIFOrientation.read(fromJPEG: try RGBImage.readFile(path))?.rawValue, o)
            let image = try RGBImage.load(path: path)
            // The stored image is 24x16; orientations 5-8 swap the sides.
            XCTAssertEqual(image.width, o >= 5 ? 16 : 24, "orientation \(o)")
            try assertMatches(image, "jpeg_orientation_\(o)", maxDiff: 2)
        }
        let bigEndian = imagePath("jpeg_orientation_6_bigendian.jpg")
        XCTAssertEqual(EXIFOrientation.read(fromJPEG: try RGBImage.readFile(bigEndian)), .right)
        try assertMatches(RGBImage.load(path: bigEndian), "jpeg_orientation_6_bigendian", maxDiff: 2)
        XCTAssertNil(EXIFOrientation.read(fromJPEG: try RGBImage.readFile(imagePath("jpeg_baseline.jpg"))))
    }

    func testOrientationTransformsCompose() {
        let image = RGBImage(width: 3, height: 2, pixels: (0..<18).map(UInt8.init))
        XCTAssertEqual(image.oriented(.right).oriented(.left), image)
        XCTAssertEqual(image.oriented(.down).oriented(.down), image)
        XCTAssertEqual(image.oriented(.leftMirrored).oriented(.leftMirrored), image)
        XCTAssertEqual(image.oriented(.rightMirrored), image.oriented(.leftMirrored).oriented(.down))
        XCTAssertEqual(image.flippedHorizontally().flippedHorizontally(), image)
        // Rotating clockwise puts the bottom-left pixel at the top-left.
        XCTAssertTrue(image.oriented(.right)[0, 0] == image[0, 1])
    }

    func testPNGDecodeMatchesPillowExactly() throws {
        for name in ["png_rgb8", "png_rgba8", "png_gray8", "png_gray_alpha", "png_gray1", "png_gray_trns",
                     "png_rgb_trns", "png_palette", "png_palette_trns", "png_palette4", "png_rgb16", "png_rgba16",
                     "png_gray16", "png_interlaced", "png_interlaced_gray_alpha"] {
            try assertMatches(RGBImage.load(path: imagePath(name + ".png")), name, maxDiff: 0, meanDiff: 0)
        }
    }

    func testAlphaIsCompositedOnWhite() throws {
        // Column 0 of png_rgba8 has alpha 0: it must come out white, not black or the colour.
        let image = try RGBImage.load(path: imagePath("png_rgba8.png"))
        for y in 0..<image.height { XCTAssertTrue(image[0, y] == (255, 255, 255)) }
        let opaque = try RGBImage.load(path: imagePath("png_rgb8.png"))
        XCTAssertFalse(opaque[0, 0] == (255, 255, 255))
    }

    func testFormatIsSniffedNotTakenFromExtension() throws {
        let dir = try temporaryDirectory()
        let disguised = dir.appendingPathComponent("photo.jpg").path
        try FileManager.default.copyItem(atPath: imagePath("png_rgb8.png"), toPath: disguised)
        XCTAssertEqual(try RGBImage.load(path: disguised), try RGBImage.load(path: imagePath("png_rgb8.png")))
        XCTAssertEqual(ImageFormat.sniff(Array("\0\0\0\u{18}ftypheic".utf8)), .unsupported("HEIC/HEIF"))
        XCTAssertEqual(ImageFormat.sniff(Array("RIFF\0\0\0\0WEBPVP8 ".utf8)), .unsupported("WebP"))
        guard case .notAnImage(let guess?) = ImageFormat.sniff(Array("<!DOCTYPE html><html>".utf8)) else {
            return XCTFail("HTML not recognised")
        }
        XCTAssertTrue(guess.contains("HTML"))
    }

    // MARK: Encoding

    func testPNGEncodeRoundTripIsExact() throws {
        let image = try RGBImage.load(path: imagePath("resize_source.png"))
        let bytes = try PNGCodec.encode(image)
        XCTAssertEqual(try PNGCodec.decode(bytes).image, image)
    }

    func testPNGTextChunksRoundTrip() throws {
        let text: [(key: String, value: String)] = [
            ("prompt", "a photo of sks dog on a beach, café"),  // Latin-1: tEXt
            ("seed", "42"),
            ("negative", "ぼやけた写真 🐕"),                      // not Latin-1: iTXt
        ]
        let path = try temporaryDirectory().appendingPathComponent("out.png").path
        let image = try RGBImage.load(path: imagePath("png_palette.png"))
        try image.writePNG(path: path, text: text)
        let read = try PNGCodec.readText(path: path)
        XCTAssertEqual(read.map(\.key), text.map(\.key))
        XCTAssertEqual(read.map(\.value), text.map(\.value))
        XCTAssertEqual(try RGBImage.load(path: path), image)
        let bytes = try RGBImage.readFile(path)
        XCTAssertEqual(count(Array("tEXt".utf8), in: bytes), 2)
        XCTAssertEqual(count(Array("iTXt".utf8), in: bytes), 1)
    }

    func testReadsPillowTextChunks() throws {
        // tEXt, zTXt (compressed) and iTXt written by Pillow; Pillow's reading in the JSON.
        let data = try Data(contentsOf: Fixtures.directory.appendingPathComponent("imageio.json"))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let expected = try XCTUnwrap(json["png_text"] as? [[String]]).map { ($0[0], $0[1]) }
        let read = try PNGCodec.readText(path: imagePath("png_text.png"))
        XCTAssertEqual(read.map(\.key), expected.map(\.0))
        XCTAssertEqual(read.map(\.value), expected.map(\.1))
    }

    func testInvalidTextKeysAreRejected() {
        let image = RGBImage(width: 2, height: 2)
        for key in ["", String(repeating: "k", count: 80), " lead", "ключ", "a\u{1}b"] {
            XCTAssertThrowsError(try PNGCodec.encode(image, text: [(key, "v")]), "key '\(key)'") { error in
                guard case ImageIOError.invalidTextChunk = error else { return XCTFail("\(error)") }
                XCTAssertTrue("\(error)".contains("1-79 Latin-1"))
            }
        }
        XCTAssertThrowsError(try PNGCodec.encode(image, text: [("k", "a\0b")]))
    }

    func testJPEGEncodeRoundTrip() throws {
        let image = try RGBImage.load(path: imagePath("png_rgb8.png")).resized(width: 64, height: 48)
        let dir = try temporaryDirectory()
        var sizes: [Int] = [], errors: [Double] = []
        for quality in [95, 50] {
            let path = dir.appendingPathComponent("q\(quality).jpg").path
            try image.writeJPEG(path: path, quality: quality)
            let decoded = try RGBImage.load(path: path)
            XCTAssertEqual(decoded.width, 64)
            XCTAssertEqual(decoded.height, 48)
            sizes.append(try RGBImage.readFile(path).count)
            errors.append(difference(decoded, image).mean)
        }
        XCTAssertLessThan(errors[0], 5.0, "quality 95 mean error (the image is noisy)")
        XCTAssertLessThan(errors[0], errors[1], "higher quality, smaller error")
        XCTAssertGreaterThan(sizes[0], sizes[1], "higher quality, larger file")
    }

    // MARK: Resize and crop

    func testResizeMatchesPillow() throws {
        let source = try RGBImage.load(path: imagePath("resize_source.png"))
        let cases: [(ResampleFilter, String, Int, Int)] = [
            (.lanczos, "lanczos", 23, 17), (.lanczos, "lanczos", 20, 20), (.lanczos, "lanczos", 61, 20),
            (.lanczos, "lanczos", 30, 47), (.lanczos, "lanczos", 70, 55), (.bicubic, "bicubic", 30, 23),
            (.bicubic, "bicubic", 64, 40), (.lanczos, "lanczos", 80, 30), (.bilinear, "bilinear", 15, 40),
            (.box, "box", 20, 15), (.box, "box", 61, 12),
        ]
        for (filter, name, w, h) in cases {
            // Same fixed-point arithmetic and pass order as Pillow: expect identical pixels.
            try assertMatches(source.resized(width: w, height: h, filter: filter), "resize.\(name).\(w)x\(h)",
                              maxDiff: 0, meanDiff: 0)
        }
        XCTAssertEqual(source.resized(width: 61, height: 47), source)
    }

    func testFitAndCropCenterMatchesTorchvisionOnPillow() throws {
        let source = try RGBImage.load(path: imagePath("resize_source.png"))
        for size in [24, 31] {
            let crop = source.fitAndCrop(to: size)
            try assertMatches(crop.image, "fit_center.\(size)", maxDiff: 0, meanDiff: 0)
            let offset = try fixture().tensor("fit_center.\(size).offset").toArray()
            XCTAssertEqual([crop.cropX, crop.cropY], offset.map { Int($0) })
            XCTAssertEqual(crop.originalWidth, 61)
            XCTAssertEqual(crop.originalHeight, 47)
        }
    }

    func testCrops() {
        let image = RGBImage(width: 5, height: 4, pixels: (0..<60).map(UInt8.init))
        let c = image.cropped(x: 1, y: 2, width: 3, height: 2)
        XCTAssertEqual(c.width, 3)
        for y in 0..<2 { for x in 0..<3 { XCTAssertTrue(c[x, y] == image[x + 1, y + 2]) } }
        // torchvision rounds (size - crop) / 2 half to even.
        XCTAssertTrue(image.centerCropOffset(width: 4, height: 3) == (0, 0))  // 0.5, 0.5 -> 0
        XCTAssertTrue(image.centerCropOffset(width: 2, height: 1) == (2, 2))  // 1.5, 1.5 -> 2
        XCTAssertEqual(RGBImage.fittedSize(width: 61, height: 47, shorterSide: 24).width, 31)  // int(24*61/47) = 31
        XCTAssertTrue(RGBImage.fittedSize(width: 30, height: 90, shorterSide: 10) == (10, 30))
    }

    func testRandomCropIsDeterministicAndCoversEveryOffset() throws {
        let source = try RGBImage.load(path: imagePath("resize_source.png"))
        var a = RandomGenerator(seed: 3), b = RandomGenerator(seed: 3)
        let first = source.fitAndCrop(to: 24, mode: .random, using: &a)
        XCTAssertEqual(first, source.fitAndCrop(to: 24, mode: .random, using: &b))
        XCTAssertEqual(first.image, source.fitAndCrop(to: 24, mode: .offset(x: first.cropX, y: first.cropY)).image)
        let resized = RGBImage(width: 31, height: 24)
        var seen = Set<Int>()
        var rng = RandomGenerator(seed: 9)
        for _ in 0..<200 {
            let o = resized.randomCropOffset(width: 24, height: 24, using: &rng)
            XCTAssertEqual(o.y, 0)
            seen.insert(o.x)
        }
        XCTAssertEqual(seen, Set(0...7))
    }

    func testPlanarFloatsRoundTrip() throws {
        let image = try RGBImage.load(path: imagePath("png_rgb8.png"))
        let floats = image.planarFloats()
        XCTAssertEqual(floats.count, 3 * image.width * image.height)
        XCTAssertEqual(floats[0], (Float(image.pixels[0]) / 255 - 0.5) / 0.5)
        XCTAssertEqual(floats[image.width * image.height], (Float(image.pixels[1]) / 255 - 0.5) / 0.5)
        XCTAssertEqual(RGBImage(planarFloats: floats, width: image.width, height: image.height), image)
        let clamped = RGBImage(planarFloats: [-3, 3, .nan], width: 1, height: 1)
        XCTAssertEqual(clamped.pixels, [0, 255, 0])
    }

    // MARK: Errors

    func assertLoadError(_ path: String, minimumSide: Int = 0, _ check: (ImageIOError) -> Bool, mentions: [String],
                         file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try RGBImage.loadForTraining(path: path, minimumSide: minimumSide), file: file, line: line) { error in
            guard let e = error as? ImageIOError else { return XCTFail("unexpected \(error)", file: file, line: line) }
            XCTAssertTrue(check(e), "wrong case: \(e)", file: file, line: line)
            let text = e.description
            XCTAssertTrue(text.contains(path), "message lacks the path: \(text)", file: file, line: line)
            for word in mentions {
                XCTAssertTrue(text.contains(word), "message lacks '\(word)': \(text)", file: file, line: line)
            }
        }
    }

    func testErrors() throws {
        assertLoadError(imagePath("missing.jpg"), { if case .fileNotFound = $0 { true } else { false } },
                        mentions: ["no such file", "Check the path"])
        assertLoadError(imagePath("empty.jpg"), { if case .emptyFile = $0 { true } else { false } },
                        mentions: ["empty", "copy it again"])
        assertLoadError(imagePath("not_an_image.jpg"), { if case .notAnImage(_, "a text file") = $0 { true } else { false } },
                        mentions: ["not a JPEG or PNG", "text file"])
        assertLoadError(imagePath("animation.gif"), { if case .unsupportedFormat(_, "GIF") = $0 { true } else { false } },
                        mentions: ["GIF", "Convert it to JPEG or PNG"])
        assertLoadError(imagePath("truncated.jpg"), { $0 == .truncated(path: imagePath("truncated.jpg"), format: .jpeg) },
                        mentions: ["JPEG", "truncated", "complete copy"])
        assertLoadError(imagePath("corrupt.jpg"), { if case .corrupt(_, .jpeg, _) = $0 { true } else { false } },
                        mentions: ["JPEG data is corrupt", "another photo"])
        assertLoadError(imagePath("truncated.png"), { $0 == .truncated(path: imagePath("truncated.png"), format: .png) },
                        mentions: ["PNG", "truncated"])
        assertLoadError(imagePath("corrupt.png"), { if case .corrupt(_, .png, _) = $0 { true } else { false } },
                        mentions: ["PNG data is corrupt", "IDAT"])
        assertLoadError(imagePath("small.png"), minimumSide: 64,
                        { $0 == .tooSmall(path: imagePath("small.png"), width: 20, height: 14, minimumSide: 64) },
                        mentions: ["20x14", "64", "larger photo"])
        assertLoadError(Self.images.path, { if case .unreadable = $0 { true } else { false } }, mentions: ["directory"])
        XCTAssertNoThrow(try RGBImage.loadForTraining(path: imagePath("small.png"), minimumSide: 14))
        XCTAssertThrowsError(try RGBImage.writeAtomically([1, 2, 3], to: "/nonexistent-dir/x.png")) { error in
            XCTAssertTrue("\(error)".contains("cannot write"))
        }
    }

    func testTruncationRules() throws {
        // A progressive JPEG cut mid-scan is refused like a baseline one...
        let progressive = try RGBImage.readFile(imagePath("jpeg_progressive.jpg"))
        XCTAssertThrowsError(try RGBImage.decode(Array(progressive.prefix(progressive.count * 7 / 10)), path: "p.jpg")) {
            XCTAssertEqual($0 as? ImageIOError, .truncated(path: "p.jpg", format: .jpeg))
        }
        // ...and so is one that lacks only its end marker, as Pillow does.
        let baseline = try RGBImage.readFile(imagePath("jpeg_baseline.jpg"))
        XCTAssertEqual(Array(baseline.suffix(2)), [0xFF, 0xD9])
        XCTAssertThrowsError(try RGBImage.decode(Array(baseline.dropLast(2)), path: "b.jpg")) {
            XCTAssertEqual($0 as? ImageIOError, .truncated(path: "b.jpg", format: .jpeg))
        }
        // PNG: a cut inside IDAT is an error, a missing IEND is not (Pillow agrees).
        let png = try RGBImage.readFile(imagePath("png_rgb8.png"))
        XCTAssertEqual(try RGBImage.decode(Array(png.dropLast(12))), try RGBImage.decode(png))
        XCTAssertThrowsError(try RGBImage.decode(Array(png.prefix(60)), path: "t.png")) {
            XCTAssertEqual($0 as? ImageIOError, .truncated(path: "t.png", format: .png))
        }
        // Only the 8-byte signature: libpng reads past the end of the data.
        XCTAssertThrowsError(try RGBImage.decode(Array(png.prefix(8)), path: "s.png")) {
            XCTAssertEqual($0 as? ImageIOError, .truncated(path: "s.png", format: .png))
        }
        XCTAssertThrowsError(try RGBImage.decode([0xFF, 0xD8, 0xFF], path: "s.jpg")) {
            XCTAssertEqual($0 as? ImageIOError, .truncated(path: "s.jpg", format: .jpeg))
        }
    }

    // MARK: Helpers

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("koala-imageio-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func count(_ needle: [UInt8], in haystack: [UInt8]) -> Int {
        guard haystack.count >= needle.count else { return 0 }
        return (0...(haystack.count - needle.count)).filter { Array(haystack[$0..<($0 + needle.count)]) == needle }.count
    }
}

