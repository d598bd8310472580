import COpenBLAS
import Synchronization

/// OpenBLAS sgemm (row-major), threaded by KoalaBooth rather than by OpenBLAS.
///
/// OpenBLAS itself runs single-threaded: after every threaded GEMM its idle worker threads
/// spin in `sched_yield` for ~0.1 s, and on this 2-core machine they took a core from the
/// Dispatch workers of whichever op came next (12% of a KOALA-700M LoRA step's samples
/// were in `sched_yield`). Large GEMMs are instead split into column or row blocks, one
/// single-threaded sgemm per `Parallel` worker.
public enum BLAS {
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
        let splits = singleThreadedDepth.load(ordering: .relaxed) == 0
        let workers = splits && m * n * k >= splitThreshold ? Parallel.threads : 1
        // Each block repacks the operand it shares with the others, so split the
        // dimension whose shared operand is the smaller one: columns when A (m×k) is
        // smaller than B (k×n), rows otherwise. Blocks are multiples of 32 (kernel tiles).
        let splitColumns = m < n
        let extent = splitColumns ? n : m
        let parts = min(workers, extent / 32)
        if parts <= 1 {
            gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        let tiles = (extent + 31) / 32
        Parallel.forEach(parts) { range in
            for p in range {
                let lo = tiles * p / parts * 32, hi = min(extent, tiles * (p + 1) / parts * 32)
                guard lo < hi else { continue }
                if splitColumns {
                    gemm(transA, transB, m, hi - lo, k, alpha, a, lda, transB ? b + lo * ldb : b + lo, ldb, beta, c + lo, ldc)
                } else {
                    gemm(transA, transB, hi - lo, n, k, alpha, transA ? a + lo : a + lo * lda, lda, b, ldb, beta, c + lo * ldc, ldc)
                }
            }
        }
    }

    @inline(__always)
    private static func gemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                             _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                             _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
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
}
