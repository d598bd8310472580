import Foundation
import XCTest
import CKernels
@testable import KoalaTensor

/// Both GEMM libraries, each forced in turn, against a Double-precision sum; and the CPU
/// feature detection that chooses between them.
final class GEMMBackendTests: XCTestCase {
    /// C = alpha·op(A)·op(B) + beta·C in Double, on the same strided buffers.
    private func reference(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Double,
                           _ a: [Float], _ lda: Int, _ b: [Float], _ ldb: Int, _ beta: Double, _ c: [Float], _ ldc: Int) -> [Double] {
        var out = c.map(Double.init)
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    sum += Double(a[transA ? p * lda + i : i * lda + p]) * Double(b[transB ? j * ldb + p : p * ldb + j])
                }
                out[i * ldc + j] = alpha * sum + (beta == 0 ? 0 : beta * Double(c[i * ldc + j]))
            }
        }
        return out
    }

    /// Every layout through each backend: unsplit and split (rows and columns), strided
    /// A/B/C (leading dimensions wider than the matrix), alpha/beta, and beta 0 over NaN
    /// (C must be overwritten, not scaled).
    func testEachBackendMatchesDoubleReference() throws {
        let savedThreads = Parallel.threads, savedBackend = BLAS.forcedBackend
        defer { Parallel.threads = savedThreads; BLAS.forcedBackend = savedBackend }
        for backend in GEMMBackend.allCases {
            BLAS.forcedBackend = backend
            for threads in [1, 3] {
                Parallel.threads = threads
                for (m, n, k) in [(45, 1003, 97), (1003, 45, 97), (64, 80, 72)] {
                    for transA in [false, true] {
                        for transB in [false, true] {
                            for (alpha, beta) in [(Float(1), Float(0)), (0.5, 2)] {
                                let lda = (transA ? m : k) + 5, ldb = (transB ? k : n) + 3, ldc = n + 7
                                let a = Tensor.randn([transA ? k : m, lda], seed: 1).toArray()
                                let b = Tensor.randn([transB ? n : k, ldb], seed: 2).toArray()
                                var c = Tensor.randn([m, ldc], seed: 3).toArray()
                                if beta == 0 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] = .nan } } }
                                let expected = reference(transA, transB, m, n, k, Double(alpha), a, lda, b, ldb, Double(beta), c, ldc)
                                a.withUnsafeBufferPointer { ap in
                                    b.withUnsafeBufferPointer { bp in
                                        c.withUnsafeMutableBufferPointer { cp in
                                            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                                                       a: ap.baseAddress!, lda: lda, b: bp.baseAddress!, ldb: ldb,
                                                       beta: beta, c: cp.baseAddress!, ldc: ldc)
                                        }
                                    }
                                }
                                var worst = 0.0
                                for i in 0..<(m * ldc) {
                                    let e = expected[i].isNaN ? 0 : abs(Double(c[i]) - expected[i])
                                    worst = max(worst, c[i].isNaN && !expected[i].isNaN ? .infinity : e)
                                }
                                // Inputs ~N(0,1), |sum| ~ sqrt(k) ≈ 10; float32 rounding over k ≤ 97
                                // terms stays far below 1e-3 for any summation order.
                                XCTAssertLessThan(worst, 1e-3, "\(backend) threads \(threads) \(m)x\(n)x\(k) tA \(transA) tB \(transB) alpha \(alpha) beta \(beta)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Forcing oneDNN must reach oneDNN (not a silent OpenBLAS fallback), with AVX-512
    /// kernels where the CPU has them.
    func testOneDNNCompilesMatmulForThisCPU() throws {
        let key = OneDNN.Key(transA: false, transB: true, m: 256, n: 320, k: 192, lda: 192, ldb: 192, ldc: 320,
                             alpha: 1, beta: 0, input: .f32)
        let mm = try XCTUnwrap(OneDNN.matmul(key), "oneDNN refused a plain fp32 matmul")
        print("oneDNN fp32 matmul: \(mm.implementation); ISA \(CPUFeatures.current)")
        if CPUFeatures.current.hasAVX512 {
            XCTAssertTrue(mm.implementation.contains("avx512"), mm.implementation)
        } else {
            XCTAssertFalse(mm.implementation.contains("avx512"), mm.implementation)
        }
    }

    func testDefaultBackendFollowsCPU() throws {
        let saved = BLAS.forcedBackend
        defer { BLAS.forcedBackend = saved }
        BLAS.forcedBackend = nil
        let big = BLAS.backend(m: 4096, n: 640, k: 640), tiny = BLAS.backend(m: 8, n: 8, k: 8)
        guard BLAS.routesToOneDNN else { XCTAssertEqual([big, tiny], [.openBLAS, .openBLAS]); return }
        switch BLAS.openBLASKernels {
        case .old:
            XCTAssertEqual([big, tiny], [.oneDNN, .oneDNN])
        case .avx2:
            XCTAssertEqual(big, CPUFeatures.current.hasAVX512 ? .oneDNN : .openBLAS)
        case .avx512:
            XCTAssertEqual([big, tiny], [.oneDNN, .openBLAS])
        }
        print("GEMM: \(BLAS.description)")
    }

    func testOpenBLASCoreNamesClassified() {
        XCTAssertEqual(BLAS.kernels(ofOpenBLASCore: "Prescott"), .old)
        XCTAssertEqual(BLAS.kernels(ofOpenBLASCore: "Sandybridge"), .old)
        XCTAssertEqual(BLAS.kernels(ofOpenBLASCore: "Haswell"), .avx2)
        XCTAssertEqual(BLAS.kernels(ofOpenBLASCore: "Zen"), .avx2)
        XCTAssertEqual(BLAS.kernels(ofOpenBLASCore: "SkylakeX"), .avx512)
        XCTAssertEqual(BLAS.kernels(ofOpenBLASCore: "Cooperlake"), .avx512)
    }

    private let allBits = UInt32(KB_CPU_AVX2 | KB_CPU_AVX512 | KB_CPU_AVX512_VNNI | KB_CPU_AVX512_BF16 | KB_CPU_AVX512_FP16 | KB_CPU_AMX_BF16)

    func testISALevelsNeedEveryLowerLevel() throws {
        XCTAssertEqual(try CPUFeatures(bits: allBits, environment: [:]).hardware, .amx)
        XCTAssertEqual(try CPUFeatures(bits: UInt32(KB_CPU_AVX2 | KB_CPU_AVX512 | KB_CPU_AVX512_BF16), environment: [:]).isa, .avx512_bf16)
        XCTAssertEqual(try CPUFeatures(bits: UInt32(KB_CPU_AVX2), environment: [:]).isa, .avx2)
        // bf16 without AVX-512 state (OS not saving ZMM registers) is no bf16 level.
        XCTAssertEqual(try CPUFeatures(bits: UInt32(KB_CPU_AVX2 | KB_CPU_AVX512_BF16), environment: [:]).isa, .avx2)
        XCTAssertEqual(try CPUFeatures(bits: 0, environment: [:]).isa, .generic)
    }

    func testEnvironmentLowersButNeverRaises() throws {
        let env = { (v: String) in [CPUFeatures.environmentKey: v] }
        let lowered = try CPUFeatures(bits: allBits, environment: env("avx2"))
        XCTAssertEqual(lowered.isa, .avx2)
        XCTAssertEqual(lowered.hardware, .amx)
        XCTAssertTrue(lowered.description.contains("lowered by KOALABOOTH_ISA"), lowered.description)
        XCTAssertEqual(try CPUFeatures(bits: allBits, environment: env("AVX512")).isa, .avx512)
        XCTAssertEqual(try CPUFeatures(bits: allBits, environment: env("avx512_bf16")).isa, .avx512_bf16)
        let raised = try CPUFeatures(bits: UInt32(KB_CPU_AVX2), environment: env("avx512_bf16"))
        XCTAssertEqual(raised.isa, .avx2)
        XCTAssertNotNil(raised.note)
        for bad in ["avx1024", "generic", "sse"] {
            XCTAssertThrowsError(try CPUFeatures(bits: allBits, environment: env(bad))) { error in
                XCTAssertTrue("\(error)".contains("avx2, avx512, avx512_bf16"), "\(error)")
            }
        }
    }

    /// cpuid + xgetbv against what the Linux kernel reports (it clears flags the OS does not support).
    func testDetectionAgreesWithProcCPUInfo() throws {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
            throw XCTSkip("no /proc/cpuinfo flags on this system")
        }
        let flags = Set(line.split(separator: " ").map(String.init))
        let hw = CPUFeatures.current.hardware
        print("CPU features: \(CPUFeatures.current)")
        XCTAssertEqual(hw >= .avx2, flags.contains("avx2") && flags.contains("fma"))
        XCTAssertEqual(hw >= .avx512, ["avx2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains))
        XCTAssertEqual(hw >= .avx512_bf16, hw >= .avx512 && flags.contains("avx512_bf16"))
        if hw == .amx { XCTAssertTrue(flags.contains("amx_bf16") && flags.contains("amx_tile")) }
    }
}
