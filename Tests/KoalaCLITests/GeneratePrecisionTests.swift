import Foundation
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `generate --precision` through the built executable, on the tiny random model.
final class GeneratePrecisionTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func generate(_ precision: String?, _ name: String) throws -> (CLIResult, String) {
        let out = dir.appendingPathComponent(name).path
        let r = try CLI.run(["generate", "--model", CLI.tinyModel, "--prompt", GenerateTests.prompt, "--steps", "4",
                             "--width", "64", "--height", "64", "--seed", "42", "--output", out]
                            + (precision.map { ["--precision", $0] } ?? []))
        return (r, out)
    }

    private func text(_ path: String) throws -> [String: String] {
        Dictionary(try PNGCodec.readText(path: path).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
    }

    /// bf16 forced runs on any CPU (emulated without AVX512_BF16), records itself in the
    /// PNG, and draws nearly the fp32 picture. Bound, argued: bf16 keeps 8 significant
    /// bits (relative rounding 2^-9 ≈ 0.2% per GEMM operand), which through the tiny
    /// U-Net's ~40 GEMMs per call, 4 guided steps and the VAE moves pixels by a few 8-bit
    /// levels on average; a mean of 4 levels (1.6% of the range) leaves room for that and
    /// fails on a wrong path (a skipped rounding changes nothing, which the > 0 check
    /// catches; a wrong weight or layout gives noise, ~60 levels apart).
    func testBF16DrawsNearlyTheFP32PictureAndSaysSo() throws {
        let (r32, fp32) = try generate("fp32", "fp32.png")
        XCTAssertEqual(r32.status, 0, r32.stderr)
        let (r16, bf16) = try generate("bf16", "bf16.png")
        XCTAssertEqual(r16.status, 0, r16.stderr)
        XCTAssertTrue(r16.stderr.contains("weights held in bf16"), r16.stderr)
        XCTAssertEqual(try text(bf16)["precision"], "bf16")
        XCTAssertEqual(try text(fp32)["precision"], "fp32")
        let a = try RGBImage.load(path: fp32).pixels, b = try RGBImage.load(path: bf16).pixels
        XCTAssertEqual(a.count, b.count)
        var sum = 0, maxDiff = 0
        for i in 0..<a.count { let d = abs(Int(a[i]) - Int(b[i])); sum += d; maxDiff = max(maxDiff, d) }
        let mean = Double(sum) / Double(a.count)
        print(String(format: "bf16 vs fp32, tiny model 64x64, 4 steps, CPU %@: mean |diff| %.3f, max %d (8-bit levels)",
                     CPUFeatures.current.description, mean, maxDiff))
        XCTAssertGreaterThan(sum, 0, "bf16 drew exactly the fp32 picture: the rounding did not happen")
        XCTAssertLessThanOrEqual(mean, 4.0)
    }

    func testAutoIsFP32WithoutNativeBF16AndBadValuesAreRefused() throws {
        let (r, out) = try generate(nil, "auto.png")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try text(out)["precision"], CPUFeatures.current.hasBF16 ? "bf16" : "fp32")
        let (bad, _) = try generate("fp16", "bad.png")
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("auto, fp32, bf16"), bad.stderr)
    }
}
