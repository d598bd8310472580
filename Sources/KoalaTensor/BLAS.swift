import COpenBLAS
import Foundation
import Synchronization

/// Which library runs a GEMM.
public enum GEMMBackend: String, CaseIterable, Sendable {
    case openBLAS = "openblas"
    case oneDNN = "onednn"
}

/// OpenBLAS sgemm (row-major), threaded by KoalaBooth rather than by OpenBLAS.
///
/// OpenBLAS itself runs single-threaded: after every threaded GEMM its idle worker threads
/// spin in `sched_yield` for ~0.1 s, and on this 2-core machine they took a core from the
/// Dispatch workers of whichever op came next (12% of a KOALA-700M LoRA step's samples
/// were in `sched_yield`). Large GEMMs are instead split into column or row blocks, one
/// single-threaded sgemm per `Parallel` worker.
///
/// Each GEMM goes to OpenBLAS or oneDNN (`backend(m:n:k:)`), both single-threaded under
/// the same split.
public enum BLAS {
    /// The environment variable that forces one backend (`openblas` or `onednn`) for A/B
    /// comparisons or as a workaround; unset or `auto` chooses by CPU and shape.
    public static let backendEnvironmentKey = "KOALABOOTH_GEMM"

    /// A backend every GEMM must use (tests, comparisons); nil: chosen per call. oneDNN
    /// falls back to OpenBLAS where it is not available.
    nonisolated(unsafe) public static var forcedBackend: GEMMBackend? = {
        let raw = ProcessInfo.processInfo.environment[backendEnvironmentKey] ?? ""
        if raw.isEmpty || raw == "auto" { return nil }
        guard let b = GEMMBackend(rawValue: raw.lowercased()) else {
            Diagnostics.logger.critical("\(backendEnvironmentKey)=\(raw) is not one of auto, openblas, onednn; set one of them or unset it")
            exit(2)
        }
        return b
    }()

    /// The backend for an m×n×k GEMM on this CPU, by measurement (`just bench gemm`,
    /// tools/bench/RESULTS.md):
    /// - AVX-512 (2-core Intel Xeon, AVX-512 + AVX512_BF16, 2026-12-02): oneDNN's
    ///   `brg:avx512_core` beats OpenBLAS's AVX2 kernels 2-5x at every U-Net shape, and its
    ///   AVX-512 kernels from about 1M multiply-adds.
    /// - AVX2 only (2-core AMD EPYC, 2026-12-02, tools/bench/gemm_cpu_time.c: rates per
    ///   CPU-second, the machine being loaded; oneDNN's `gemm:jit` vs OpenBLAS's Zen
    ///   kernels, one thread): oneDNN 6-16% faster from 1M to 16.8M multiply-adds (the
    ///   attention tiles), tied or 7-11% slower from 26M to 67M (Winograd bands), tied or
    ///   up to 30% slower above (16x16 GEGLU, im2col), tied below 1M (per-call set-up).
    /// - Where OpenBLAS runs pre-AVX2 kernels (it takes CPUs it does not know, such as that
    ///   Xeon, for a Prescott) oneDNN wins everywhere, 5-7x.
    public static func backend(m: Int, n: Int, k: Int) -> GEMMBackend {
        if let forcedBackend { return forcedBackend == .oneDNN && !OneDNN.isAvailable ? .openBLAS : forcedBackend }
        guard OneDNN.isAvailable else { return .openBLAS }
        let multiplyAdds = m * n * k
        if CPUFeatures.current.hasAVX512 {
            guard routesToOneDNNWithAVX512 else { return .openBLAS }
            return openBLASKernels != .avx512 || multiplyAdds >= oneDNNMinMultiplyAdds ? .oneDNN : .openBLAS
        }
        switch openBLASKernels {
        case .old: return .oneDNN
        case .avx2, .avx512: return avx2OneDNNMultiplyAdds.contains(multiplyAdds) ? .oneDNN : .openBLAS
        }
    }
    /// Off until run on an AVX-512 machine: there the KOALA-700M U-Net forward with every
    /// GEMM on oneDNN (`brg:avx512_core` kernels) crashed with SIGSEGV in oneDNN's JIT
    /// code on a Dispatch worker (2026-12-02), and the AVX2-only machine that followed
    /// cannot run those kernels: its `gemm:jit` path passed the same forward, the
    /// concurrency test and the guard-page test. Turn on once
    /// `UNet2DConditionModelOneDNNTests` and GEMMBackendTests pass on an AVX-512 CPU.
    static let routesToOneDNNWithAVX512 = false
    /// Below this OpenBLAS's AVX-512 kernels win (oneDNN's per-call set-up dominates).
    static let oneDNNMinMultiplyAdds = 1 << 20
    /// On AVX2-only CPUs, the GEMM sizes (multiply-adds) oneDNN's AVX2 kernels ran faster
    /// than OpenBLAS's: up to the 512x512x64 attention tile.
    static let avx2OneDNNMultiplyAdds = (1 << 20)...(1 << 24)

    /// Whether oneDNN runs on this CPU (it needs AVX2), for tests that force it.
    public static var isOneDNNAvailable: Bool { OneDNN.isAvailable }

    /// What OpenBLAS's chosen core (`openblas_get_corename`, which honours
    /// OPENBLAS_CORETYPE) runs: its DYNAMIC_ARCH cores with AVX2 and with AVX-512.
    enum OpenBLASKernels { case old, avx2, avx512 }
    static let openBLASCore = String(cString: openblas_get_corename())
    static let openBLASKernels = kernels(ofOpenBLASCore: openBLASCore)
    static func kernels(ofOpenBLASCore name: String) -> OpenBLASKernels {
        let core = name.lowercased()
        if ["skylakex", "cooperlake", "sapphirerapids"].contains(core) { return .avx512 }
        if ["haswell", "zen"].contains(core) { return .avx2 }
        return .old
    }

    private static let singleThreadedOpenBLAS: Void = openblas_set_num_threads(1)
    /// How many `singleThreaded` calls are running (their callers already use every
    /// worker). A count, not a saved-and-restored flag, so calls from several threads
    /// cannot leave splitting off.
    private static let singleThreadedDepth = Atomic<Int>(0)
    /// Below this many multiply-adds a GEMM is not worth a Dispatch round trip.
    static let splitThreshold = 1 << 22

    /// C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C.
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                             alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        _ = singleThreadedOpenBLAS
        let lib = backend(m: m, n: n, k: k)
        let splits = singleThreadedDepth.load(ordering: .relaxed) == 0
        let workers = splits && m * n * k >= splitThreshold ? Parallel.threads : 1
        // Each block repacks the operand it shares with the others, so split the
        // dimension whose shared operand is the smaller one: columns when A (m×k) is
        // smaller than B (k×n), rows otherwise. Blocks are multiples of 32 (kernel tiles).
        let splitColumns = m < n
        let extent = splitColumns ? n : m
        let parts = min(workers, extent / 32)
        if parts <= 1 {
            gemm(lib, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        let tiles = (extent + 31) / 32
        Parallel.forEach(parts) { range in
            for p in range {
                let lo = tiles * p / parts * 32, hi = min(extent, tiles * (p + 1) / parts * 32)
                guard lo < hi else { continue }
                if splitColumns {
                    gemm(lib, transA, transB, m, hi - lo, k, alpha, a, lda, transB ? b + lo * ldb : b + lo, ldb, beta, c + lo, ldc)
                } else {
                    gemm(lib, transA, transB, hi - lo, n, k, alpha, transA ? a + lo : a + lo * lda, lda, b, ldb, beta, c + lo * ldc, ldc)
                }
            }
        }
    }

    @inline(__always)
    private static func gemm(_ lib: GEMMBackend, _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                             _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                             _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        if lib == .oneDNN {
            let key = OneDNN.Key(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc,
                                 alpha: alpha, beta: beta, input: .f32)
            if OneDNN.gemm(key, a: a, b: b, c: c) { return }
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Runs `body` with every GEMM on the calling thread, for code that parallelises over
    /// independent GEMMs itself (attention heads, convolution tiles).
    public static func singleThreaded<T>(_ body: () throws -> T) rethrows -> T {
        singleThreadedDepth.wrappingAdd(1, ordering: .relaxed)
        defer { singleThreadedDepth.wrappingSubtract(1, ordering: .relaxed) }
        return try body()
    }

    /// The GEMM libraries in use, for `koalabooth doctor` and the bench header, e.g.
    /// `oneDNN 2.6.3 (brg:avx512_core) from 65536 multiply-adds, OpenBLAS 0.3.21 (SkylakeX) below`.
    public static var description: String {
        let openBLAS = "OpenBLAS \(String(cString: openblas_get_config()).split(separator: " ").dropFirst().first ?? "") (\(openBLASCore) kernels)"
        let probe = OneDNN.matmul(OneDNN.Key(transA: false, transB: true, m: 256, n: 256, k: 256, lda: 256, ldb: 256, ldc: 256,
                                             alpha: 1, beta: 0, input: .f32))
        let onednn = "\(OneDNN.version ?? "oneDNN") (\(probe?.implementation ?? "unavailable"))"
        switch forcedBackend {
        case .openBLAS?: return "\(openBLAS), forced by \(backendEnvironmentKey)"
        case .oneDNN?: return OneDNN.isAvailable ? "\(onednn), forced by \(backendEnvironmentKey)" : "\(openBLAS) (oneDNN unavailable)"
        case nil:
            guard OneDNN.isAvailable else { return "\(openBLAS); oneDNN unavailable" }
            if CPUFeatures.current.hasAVX512 && !routesToOneDNNWithAVX512 {
                return "\(openBLAS); \(onednn) only with \(backendEnvironmentKey)=onednn on AVX-512 (BLAS.routesToOneDNNWithAVX512)"
            }
            if backend(m: 1, n: 1, k: 1) == .oneDNN { return "\(onednn); \(openBLAS) not used" }
            if backend(m: 4096, n: 4096, k: 4096) == .openBLAS {
                let r = avx2OneDNNMultiplyAdds
                return "\(onednn) from \(r.lowerBound) to \(r.upperBound) multiply-adds, \(openBLAS) outside"
            }
            return "\(onednn) from \(oneDNNMinMultiplyAdds) multiply-adds, \(openBLAS) below"
        }
    }
}
