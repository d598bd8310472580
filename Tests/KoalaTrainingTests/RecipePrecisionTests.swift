import XCTest
import KoalaTensor
@testable import KoalaTraining

/// `model.precision` (recipes/README.md): parsed, checked, written back, and `auto`
/// resolved per CPU before a run records it.
final class RecipePrecisionTests: XCTestCase {
    func testPrecisionKey() throws {
        XCTAssertEqual(try TrainingRecipe.parse(toml: "").model.precision, .auto)
        let r = try TrainingRecipe.parse(toml: "[model]\nprecision = \"bf16\"")
        XCTAssertEqual(r.model.precision, .bf16)
        XCTAssertTrue(r.tomlString().contains("precision = \"bf16\""), r.tomlString())
        XCTAssertEqual(try TrainingRecipe.parse(toml: r.tomlString()), r)
        XCTAssertThrowsError(try TrainingRecipe.parse(toml: "[model]\nprecision = \"fp16\"")) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("model.precision") && text.contains("\"auto\", \"fp32\", \"bf16\""), text)
        }
    }

    func testAutoResolvesByCPU() throws {
        // kb_cpu_features() bits (CKernels/include/kb_cpu.h): AVX2 1, AVX-512 2, AVX512_BF16 8.
        let avx2 = try CPUFeatures(bits: 1, environment: [:])
        let bf16 = try CPUFeatures(bits: 1 | 2 | 8, environment: [:])
        let r = try TrainingRecipe.parse(toml: "")
        XCTAssertEqual(r.resolvingPrecision(for: avx2).model.precision, .fp32)
        XCTAssertEqual(r.resolvingPrecision(for: bf16).model.precision, .bf16)
        var forced = r
        forced.model.precision = .bf16
        XCTAssertEqual(forced.resolvingPrecision(for: avx2).model.precision, .bf16, "bf16 asked is bf16 on any CPU (emulated)")
    }
}
