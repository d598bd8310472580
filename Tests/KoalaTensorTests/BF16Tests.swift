import Foundation
import XCTest
import CKernels
import KoalaTestSupport
@testable import KoalaTensor

/// The bf16 precision mode's engine parts (Precision.swift, BF16Ops.swift, CKernels/bf16.c).
final class BF16Tests: XCTestCase {
    /// Values that take every branch of the rounding: ties both ways, carries into the
    /// exponent, the largest finite values (round to infinity), subnormals, infinities, NaN.
    private let special: [Float] = [
        0, -0, 1, -1, 1.00390625, 1.01171875, 1.0078125 + 1e-7, 3.14159265, 65504, -1e-30, 1e-40, -1e-42,
        Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x3F80_7FFF),
        Float(bitPattern: 0x7F7F_FFFF), -Float.greatestFiniteMagnitude, .infinity, -.infinity, .nan,
        Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0x4049_0FDB),
    ]

    private func values(_ n: Int, seed: UInt64) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return (0..<n).map { i in i < special.count ? special[i] : g.normal() * Float(1 << (i % 20)) / 1024 }
    }

    /// Finite values of order 1 for the GEMM tests.
    private func plain(_ n: Int, seed: UInt64) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return (0..<n).map { _ in g.normal() }
    }

    func testConversionKernelsMatchTheScalarRoundToNearestEven() {
        // Lengths around the 8- and 16-wide vector loops, so tails are covered.
        for n in [1, 7, 8, 15, 16, 17, 33, 1000, 70_001] {
            let x = values(n, seed: UInt64(n))
            var half = [UInt16](repeating: 0, count: n), back = [Float](repeating: 0, count: n)
            var rounded = [Float](repeating: 0, count: n)
            BF16.convert(x, to: &half, count: n)
            BF16.convert(half, to: &back, count: n)
            BF16.round(x, to: &rounded, count: n)
            for i in 0..<n {
                let want = HalfPrecision.bf16(from: x[i])
                XCTAssertEqual(half[i], want, "n \(n) element \(i): \(x[i]) (0x\(String(x[i].bitPattern, radix: 16)))")
                XCTAssertEqual(back[i].bitPattern, HalfPrecision.float(fromBF16: want).bitPattern, "n \(n) widen \(i)")
                XCTAssertEqual(rounded[i].bitPattern, back[i].bitPattern, "n \(n) round \(i)")
            }
        }
        // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
        XCTAssertEqual(HalfPrecision.bf16(from: Float(bitPattern: 0x3F80_8000)), 0x3F80)
        XCTAssertEqual(HalfPrecision.bf16(from: Float(bitPattern: 0x3F81_8000)), 0x3F82)
    }

    func testHoldingInBF16HalvesTheStorageAndKeepsTheRoundedValues() {
        let w = Tensor(shape: [3, 5], values: values(15, seed: 3).map { $0.isFinite ? $0 : 2 })
        let rounded = w.roundedToBF16().toArray()
        w.holdInBF16()
        XCTAssertTrue(w.isHeldInBF16)
        XCTAssertEqual(w.widenedFromBF16().toArray().map(\.bitPattern), rounded.map(\.bitPattern))
        XCTAssertNotEqual(rounded, (0..<15).map { _ in Float(0) })
    }

    func testPrecisionParsingAndAuto() throws {
        XCTAssertEqual(try Precision(parsing: "BF16"), .bf16)
        XCTAssertThrowsError(try Precision(parsing: "fp16")) { e in
            XCTAssertTrue("\(e)".contains("auto, fp32, bf16"), "\(e)")
        }
        let avx2 = try CPUFeatures(bits: UInt32(KB_CPU_AVX2 | KB_CPU_AVX512), environment: [:])
        let bf16 = try CPUFeatures(bits: UInt32(KB_CPU_AVX2 | KB_CPU_AVX512 | KB_CPU_AVX512_BF16), environment: [:])
        XCTAssertEqual(Precision.auto.resolved(for: bf16), .bf16)
        let lowered = try CPUFeatures(bits: UInt32(KB_CPU_AVX2 | KB_CPU_AVX512 | KB_CPU_AVX512_BF16), environment: ["KOALABOOTH_ISA": "avx512"])
        XCTAssertEqual(Precision.auto.resolved(for: lowered), .fp32)
        XCTAssertEqual(Precision.auto.resolved(for: avx2), .fp32)
        XCTAssertEqual(Precision.bf16.resolved(for: avx2), .bf16)
        XCTAssertEqual(Precision.fp32.resolved(for: avx2), .fp32)
    }

    /// Emulated bf16 linear = float32 linear of the bf16-rounded input, weight and bias,
    /// exactly; and it is not the float32 result (so the mode does something).
    func testLinearInBF16IsFloat32OnRoundedOperands() {
        let x = Tensor(shape: [4, 6, 33], values: plain(4 * 6 * 33, seed: 1))
        let w = Tensor(shape: [17, 33], values: plain(17 * 33, seed: 2))
        let b = Tensor(shape: [17], values: plain(17, seed: 5))
        let fp32 = x.linear(w, b)
        let want = x.roundedToBF16().linear(w.roundedToBF16(), b.roundedToBF16())
        let got = Precision.with(.bf16) { x.linear(w, b) }
        if Precision.nativeBF16 {
            // oneDNN sums in another order: float32 rounding only.
            assertClose(got, want, atol: 1e-5, rtol: 1e-5, "native bf16 linear")
        } else {
            XCTAssertEqual(got.toArray(), want.toArray())
        }
        XCTAssertNotEqual(got.toArray(), fp32.toArray())
        // A weight held in bf16 computes in bf16 whatever the mode.
        w.holdInBF16()
        assertClose(x.linear(w, b), want, atol: 1e-5, rtol: 1e-5, "held weight")
    }

    /// Gradients pass through the rounding (autocast's cast): a trainable weight gets the
    /// float32 gradient of the rounded forward, and stays float32 itself.
    func testGradientsThroughBF16LinearAndConv() {
        let x = Tensor(shape: [2, 3, 6, 6], values: plain(2 * 3 * 36, seed: 7))
        let w = Tensor(shape: [4, 3, 3, 3], values: plain(4 * 27, seed: 8), requiresGrad: true)
        let l = Tensor(shape: [5, 6], values: plain(30, seed: 9), requiresGrad: true)
        func loss(_ x: Tensor, _ w: Tensor, _ l: Tensor) -> Tensor { x.conv2d(w, padding: 1).linear(l).sum() }
        Precision.with(.bf16) { loss(x, w, l).backward() }
        let gw = w.grad!.toArray(), gl = l.grad!.toArray()
        w.grad = nil; l.grad = nil
        let wr = w.roundedToBF16().detached(), lr = l.roundedToBF16().detached()
        wr.requiresGrad = true; lr.requiresGrad = true
        // Expected: the float32 graph with a rounding wherever the bf16 mode rounds.
        x.roundedToBF16().conv2d(wr, padding: 1).roundedToBF16().linear(lr).sum().backward()
        XCTAssertEqual(gw, wr.grad!.toArray())
        XCTAssertEqual(gl, lr.grad!.toArray())
        XCTAssertFalse(w.isHeldInBF16)
    }

    /// The AVX512_BF16 path (oneDNN's bf16 matmul) against the emulation, where the CPU has it.
    func testNativeBF16MatmulMatchesEmulation() throws {
        guard Precision.nativeBF16 else {
            throw XCTSkip("CPU \(CPUFeatures.current) has no AVX512_BF16/AMX (or oneDNN is unavailable): the native bf16 matmul cannot run here")
        }
        for (m, n, k) in [(1, 1, 1), (7, 33, 65), (300, 257, 1280), (1024, 640, 640)] {
            let x = Tensor(shape: [m, k], values: values(m * k, seed: UInt64(m)).map { $0.isFinite ? $0 / 64 : 0 })
            let w = Tensor(shape: [n, k], values: values(n * k, seed: UInt64(n)).map { $0.isFinite ? $0 / 64 : 0 })
            let native = try XCTUnwrap(x.linearNativeBF16(w, nil), "oneDNN refused \(m)x\(n)x\(k)")
            let emulated = x.roundedToBF16().linearFloat32(w.roundedToBF16(), nil)
            assertClose(native, emulated, atol: 1e-5, rtol: 1e-4, "\(m)x\(n)x\(k)")
        }
    }
}
