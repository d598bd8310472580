import Foundation

/// Threading for every kernel, GEMMs included (`BLAS.sgemm` splits large ones here):
/// work is split over `Parallel.threads` Dispatch workers. Work is split into the same chunks for
/// the same thread count, so results are deterministic for a fixed `threads`.
public enum Parallel {
    nonisolated(unsafe) public static var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    /// Calls `body(range)` over disjoint chunks covering `0..<n`, in parallel when the
    /// work is large enough (`grain` is the minimum number of items per chunk).
    @inline(__always)
    public static func forEach(_ n: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        let chunks = min(threads, max(1, n / max(grain, 1)))
        if chunks <= 1 { body(0..<n); return }
        withoutActuallyEscaping(body) { escaping in
            // The closure only writes disjoint ranges of buffers owned by the caller, which
            // outlives this call; Dispatch needs it to be Sendable.
            let sendable = unsafeBitCast(escaping, to: (@Sendable (Range<Int>) -> Void).self)
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                let lo = n * c / chunks, hi = n * (c + 1) / chunks
                if lo < hi { sendable(lo..<hi) }
            }
        }
    }

    /// One task per index `0..<n` (for coarse items such as attention heads).
    public static func tasks(_ n: Int, _ body: (Int) -> Void) {
        forEach(n, grain: 1) { r in for i in r { body(i) } }
    }
}
