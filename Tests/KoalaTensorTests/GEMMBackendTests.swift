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

    /// Forcing oneDNN must reach oneDNN (not a silent OpenBLAS fallback), with kernels no
    /// wider than the ISA in use. Runs wherever oneDNN runs (AVX2 and up).
    func testOneDNNCompilesMatmulForThisCPU() throws {
        try XCTSkipUnless(OneDNN.isAvailable, "oneDNN does not run on this CPU (\(CPUFeatures.current)): every GEMM is OpenBLAS's")
        let key = OneDNN.Key(transA: false, transB: true, m: 256, n: 320, k: 192, lda: 192, ldb: 192, ldc: 320,
                             alpha: 1, beta: 0, input: .f32)
        let mm = try XCTUnwrap(OneDNN.matmul(key), "oneDNN refused a plain fp32 matmul")
        print("oneDNN fp32 matmul: \(mm.implementation); ISA \(CPUFeatures.current)")
        if !CPUFeatures.current.hasAVX512 { XCTAssertFalse(mm.implementation.contains("avx512"), mm.implementation) }
    }

    /// On AVX-512 CPUs oneDNN must run its AVX-512 kernels (the reason it is routed to there).
    func testOneDNNUsesAVX512KernelsWhereTheCPUHasThem() throws {
        try XCTSkipUnless(OneDNN.isAvailable && CPUFeatures.current.hasAVX512,
                          "needs AVX-512; this CPU runs \(CPUFeatures.current), where oneDNN's AVX2 kernels are tested instead")
        let key = OneDNN.Key(transA: false, transB: true, m: 256, n: 320, k: 192, lda: 192, ldb: 192, ldc: 320,
                             alpha: 1, beta: 0, input: .f32)
        let mm = try XCTUnwrap(OneDNN.matmul(key), "oneDNN refused a plain fp32 matmul")
        XCTAssertTrue(mm.implementation.contains("avx512"), mm.implementation)
    }

    /// The pattern of a U-Net forward with every GEMM on oneDNN: many different GEMMs at
    /// once from the Dispatch workers (inside `BLAS.singleThreaded`, as attention heads and
    /// convolution tiles run them), workers compiling primitives for shapes no one has
    /// asked for yet while others execute, strided operands, alpha/beta. Each result
    /// against OpenBLAS on the same inputs.
    func testConcurrentOneDNNGEMMsFromDispatchWorkers() throws {
        try XCTSkipUnless(OneDNN.isAvailable, "oneDNN does not run on this CPU (\(CPUFeatures.current))")
        let savedThreads = Parallel.threads, savedBackend = BLAS.forcedBackend
        defer { Parallel.threads = savedThreads; BLAS.forcedBackend = savedBackend }
        Parallel.threads = max(4, savedThreads)
        // U-Net shape classes, scaled down; k grows by one per round so every task
        // compiles a primitive of its own while the others run.
        let base: [(m: Int, n: Int, k: Int, transA: Bool, transB: Bool)] = [
            (512, 320, 64, false, true), (512, 64, 320, false, false), (256, 640, 160, false, true),
            (77, 320, 192, false, true), (320, 256, 288, false, false), (128, 96, 512, true, false),
            (1024, 40, 96, false, false), (33, 1000, 17, false, true),
        ]
        let tasks = 96
        struct Case {
            var m, n, k, lda, ldb, ldc: Int
            var transA, transB: Bool
            var alpha, beta: Float
            var a, b, c: [Float]
        }
        var cases: [Case] = (0..<tasks).map { t in
            let s = base[t % base.count], k = s.k + t / base.count
            let lda = (s.transA ? s.m : k) + t % 3, ldb = (s.transB ? k : s.n) + t % 2, ldc = s.n + t % 4
            return Case(m: s.m, n: s.n, k: k, lda: lda, ldb: ldb, ldc: ldc, transA: s.transA, transB: s.transB,
                        alpha: t % 5 == 0 ? 0.5 : 1, beta: t % 7 == 0 ? 1 : 0,
                        a: Tensor.randn([(s.transA ? k : s.m) * lda], seed: UInt64(3 * t)).toArray(),
                        b: Tensor.randn([(s.transB ? s.n : k) * ldb], seed: UInt64(3 * t + 1)).toArray(),
                        c: Tensor.randn([s.m * ldc], seed: UInt64(3 * t + 2)).toArray())
        }
        func run(_ backend: GEMMBackend, _ cases: inout [Case]) {
            BLAS.forcedBackend = backend
            cases.withUnsafeMutableBufferPointer { buffer in
                let all = buffer
                BLAS.singleThreaded {
                    Parallel.tasks(tasks) { t in
                        let x = all[t]
                        var c = x.c
                        x.a.withUnsafeBufferPointer { a in
                            x.b.withUnsafeBufferPointer { b in
                                c.withUnsafeMutableBufferPointer { cp in
                                    BLAS.sgemm(transA: x.transA, transB: x.transB, m: x.m, n: x.n, k: x.k, alpha: x.alpha,
                                               a: a.baseAddress!, lda: x.lda, b: b.baseAddress!, ldb: x.ldb,
                                               beta: x.beta, c: cp.baseAddress!, ldc: x.ldc)
                                }
                            }
                        }
                        all[t].c = c
                    }
                }
            }
        }
        var expected = cases
        run(.openBLAS, &expected)  // also starts every Dispatch worker the oneDNN run uses
        let threadsBefore = Self.threadCount()
        run(.oneDNN, &cases)
        let threadsAfter = Self.threadCount()
        for (t, (got, want)) in zip(cases, expected).enumerated() {
            // Inputs ~N(0,1), |C| ~ sqrt(k) ≈ 20: float32 rounding over k ≤ 530 terms in
            // any order stays below 1e-3; a wrong element is off by ~sqrt(k).
            let worst = zip(got.c, want.c).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-3, "task \(t): \(got.m)x\(got.n)x\(got.k) tA \(got.transA) tB \(got.transB)")
        }
        // Not asserted: on the AVX2 EPYC the count grew by one (6 to 7) once, unexplained
        // yet (Dispatch can add a worker too); printed so a team of CPU-count threads shows.
        print("threads before the oneDNN GEMMs \(threadsBefore), after \(threadsAfter)")
    }

    /// Operands that end exactly where an unreadable page begins (and, second pass, start
    /// right after one), as big tensors do: their allocations are page-granular mmaps, and
    /// a kernel that reads even one vector past a matrix faults there, though it never
    /// faults on the small heap buffers of the other tests. Each backend, every layout,
    /// k and n with vector tails, results against OpenBLAS on ordinary buffers.
    func testNoBackendReadsOrWritesOutsideItsOperands() throws {
        let savedBackend = BLAS.forcedBackend
        defer { BLAS.forcedBackend = savedBackend }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        /// `count` floats between unmapped pages: flush against the upper one, or the lower one.
        func guarded(_ values: [Float], atEnd: Bool, _ body: (UnsafeMutablePointer<Float>) -> Void) {
            let bytes = values.count * 4, dataPages = (bytes + page - 1) / page
            let total = (dataPages + 2) * page
            let base = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
            defer { munmap(base, total) }
            mprotect(base, page, PROT_NONE)
            mprotect(base + (dataPages + 1) * page, page, PROT_NONE)
            let start = atEnd ? base + (dataPages + 1) * page - bytes : base + page
            let p = start.bindMemory(to: Float.self, capacity: values.count)
            p.update(from: values, count: values.count)
            body(p)
        }
        for (m, n, k) in [(67, 1003, 97), (256, 40, 1283), (5, 77, 333)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let lda = transA ? m : k, ldb = transB ? k : n
                    let a = Tensor.randn([m * k], seed: 4).toArray(), b = Tensor.randn([k * n], seed: 5).toArray()
                    var want = [Float](repeating: 0, count: m * n)
                    BLAS.forcedBackend = .openBLAS
                    BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                               c: &want, ldc: n)
                    for backend in GEMMBackend.allCases {
                        BLAS.forcedBackend = backend
                        for atEnd in [true, false] {
                            guarded(a, atEnd: atEnd) { ga in
                                guarded(b, atEnd: atEnd) { gb in
                                    guarded(want.map { _ in Float.nan }, atEnd: atEnd) { gc in
                                        BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: ga, lda: lda,
                                                   b: gb, ldb: ldb, c: gc, ldc: n)
                                        let worst = (0..<(m * n)).map { abs(gc[$0] - want[$0]) }.max() ?? 0
                                        XCTAssertLessThan(worst, 1e-3, "\(backend) \(m)x\(n)x\(k) tA \(transA) tB \(transB) flush \(atEnd ? "end" : "start")")
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Threads of this process (Linux), or 0 where /proc is missing.
    private static func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
    }

    /// Automatic routing by measurement (see `BLAS.backend`).
    func testDefaultBackendFollowsCPU() throws {
        let saved = BLAS.forcedBackend
        defer { BLAS.forcedBackend = saved }
        BLAS.forcedBackend = nil
        let big = BLAS.backend(m: 4096, n: 640, k: 640), tile = BLAS.backend(m: 512, n: 512, k: 64),
            tiny = BLAS.backend(m: 8, n: 8, k: 8)
        print("GEMM: \(BLAS.description)")
        guard OneDNN.isAvailable else { XCTAssertEqual([big, tile, tiny], [.openBLAS, .openBLAS, .openBLAS]); return }
        if CPUFeatures.current.hasAVX512 {
            guard BLAS.routesToOneDNNWithAVX512 else { XCTAssertEqual([big, tile, tiny], [.openBLAS, .openBLAS, .openBLAS]); return }
            XCTAssertEqual([big, tile, tiny], [.oneDNN, .oneDNN, BLAS.openBLASKernels == .avx512 ? .openBLAS : .oneDNN])
            return
        }
        switch BLAS.openBLASKernels {
        case .old:
            XCTAssertEqual([big, tile, tiny], [.oneDNN, .oneDNN, .oneDNN])
        case .avx2, .avx512:
            XCTAssertEqual([big, tile, tiny], [.openBLAS, .oneDNN, .openBLAS])
        }
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
