import CDNNL
import Synchronization

/// oneDNN (Debian's `libdnnl`) matmul for `BLAS.sgemm`: its JIT kernels use AVX-512
/// where the CPU has it, which Debian's OpenBLAS does not reliably do.
///
/// Every call runs on the calling thread only (OpenMP thread count 1 on that thread), and
/// `BLAS.sgemm` splits large GEMMs over the Dispatch workers as it does for OpenBLAS.
/// Debian's oneDNN threads with libgomp, whose idle threads spin (GOMP_SPINCOUNT,
/// ~300k pauses) after every parallel region and whose wait policy is read from the
/// environment before `main`, so it cannot be turned off from here: with one thread per
/// call no OpenMP team ever exists to compete with the Dispatch workers.
enum OneDNN {
    /// The CPU engine with oneDNN's kernels capped at `CPUFeatures.current.isa`; nil where
    /// the CPU has no AVX2 or oneDNN does not start.
    nonisolated(unsafe) static let engine: dnnl_engine_t? = {
        let cap: dnnl_cpu_isa_t
        switch CPUFeatures.current.isa {
        case .generic: return nil
        case .avx2: cap = dnnl_cpu_isa_avx2
        case .avx512: cap = dnnl_cpu_isa_avx512_core
        case .avx512_bf16: cap = dnnl_cpu_isa_avx512_core_bf16
        case .amx: cap = dnnl_cpu_isa_all
        }
        // Must come before any other oneDNN call, which fixes the ISA for the process.
        _ = dnnl_set_max_cpu_isa(cap)
        var e: dnnl_engine_t?
        guard dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success else { return nil }
        return e
    }()

    static var isAvailable: Bool { engine != nil }

    /// "oneDNN 2.6.3" (nil when unavailable).
    static var version: String? {
        guard isAvailable, let v = dnnl_version()?.pointee else { return nil }
        return "oneDNN \(v.major).\(v.minor).\(v.patch)"
    }

    /// Element type of the A and B operands (C is always float32).
    enum InputType: Hashable { case f32, bf16 }

    /// Everything a matmul primitive is compiled for.
    struct Key: Hashable {
        var transA: Bool, transB: Bool
        var m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
        var alpha: Float, beta: Float
        var input: InputType
    }

    /// A compiled primitive and the memory layouts it was compiled for. Freed when the
    /// last user lets go (the cache may drop it while another thread still runs it).
    final class Matmul: @unchecked Sendable {
        let primitive: dnnl_primitive_t
        var a: dnnl_memory_desc_t, b: dnnl_memory_desc_t, c: dnnl_memory_desc_t
        /// oneDNN's implementation name, e.g. `brg:avx512_core`.
        let implementation: String

        init?(_ key: Key, engine: dnnl_engine_t) {
            let type = key.input == .f32 ? dnnl_f32 : dnnl_bf16
            func desc(_ rows: Int, _ cols: Int, _ ld: Int, transposed: Bool, _ t: dnnl_data_type_t) -> dnnl_memory_desc_t? {
                var md = dnnl_memory_desc_t()
                let strides: [dnnl_dim_t] = transposed ? [1, dnnl_dim_t(ld)] : [dnnl_dim_t(ld), 1]
                guard dnnl_memory_desc_init_by_strides(&md, 2, [dnnl_dim_t(rows), dnnl_dim_t(cols)], t, strides) == dnnl_success
                else { return nil }
                return md
            }
            guard let a = desc(key.m, key.k, key.lda, transposed: key.transA, type),
                  let b = desc(key.k, key.n, key.ldb, transposed: key.transB, type),
                  let c = desc(key.m, key.n, key.ldc, transposed: false, dnnl_f32) else { return nil }
            self.a = a; self.b = b; self.c = c
            var op = dnnl_matmul_desc_t()
            guard dnnl_matmul_desc_init(&op, &self.a, &self.b, nil, &self.c) == dnnl_success else { return nil }
            var attr: dnnl_primitive_attr_t?
            guard dnnl_primitive_attr_create(&attr) == dnnl_success else { return nil }
            defer { dnnl_primitive_attr_destroy(attr) }
            if key.alpha != 1 {
                var alpha = key.alpha
                guard dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success else { return nil }
            }
            if key.beta != 0 {
                var ops: dnnl_post_ops_t?
                guard dnnl_post_ops_create(&ops) == dnnl_success else { return nil }
                defer { dnnl_post_ops_destroy(ops) }
                guard dnnl_post_ops_append_sum(ops, key.beta) == dnnl_success,
                      dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success else { return nil }
            }
            var pd: dnnl_primitive_desc_t?
            guard dnnl_primitive_desc_create(&pd, &op, attr, engine, nil) == dnnl_success else { return nil }
            defer { dnnl_primitive_desc_destroy(pd) }
            var name: UnsafePointer<CChar>?
            _ = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name)
            implementation = name.map { String(cString: $0) } ?? "?"
            var p: dnnl_primitive_t?
            guard dnnl_primitive_create(&p, pd) == dnnl_success, let p else { return nil }
            primitive = p
        }

        deinit { dnnl_primitive_destroy(primitive) }
    }

    /// Compiled primitives by shape (creating one costs 0.1-30 ms: far more than a small
    /// GEMM). A shape oneDNN refused maps to nil, so it is asked once. A model has a few
    /// hundred shapes; the bound only guards against unbounded shape streams.
    private static let cache = Mutex<[Key: Matmul?]>([:])
    private static let cacheLimit = 4096
    /// Held while compiling, one primitive at a time: workers that miss on the same shape
    /// at once (every attention head, every convolution tile) wait for one compilation
    /// instead of each running their own, and oneDNN never compiles while it compiles.
    /// Lookups take only `cache`, so GEMMs of known shapes run meanwhile.
    private static let compiling = Mutex<Void>(())

    static func matmul(_ key: Key) -> Matmul? {
        if let hit = cache.withLock({ $0[key] }) { return hit }
        guard let engine else { return nil }
        return compiling.withLock { _ in
            if let raced = cache.withLock({ $0[key] }) { return raced }
            singleThreadedOpenMP()
            let made = Matmul(key, engine: engine)
            cache.withLock { table in
                if table.count >= cacheLimit { table.removeAll() }
                table[key] = .some(made)
            }
            return made
        }
    }

    /// The calling thread's OpenMP team size: 1, so oneDNN never starts OpenMP threads.
    /// (A per-thread setting; a Dispatch worker starts at the CPU count.)
    @inline(__always)
    static func singleThreadedOpenMP() {
        if omp_get_max_threads() != 1 { omp_set_num_threads(1) }
    }

    /// C = alpha · op(A) · op(B) + beta · C with a cached primitive; false when oneDNN
    /// cannot do this shape (the caller uses OpenBLAS). `a` and `b` point at float32 or
    /// bf16 (UInt16) elements as `input` says.
    static func gemm(_ key: Key, a: UnsafeRawPointer, b: UnsafeRawPointer, c: UnsafeMutablePointer<Float>) -> Bool {
        guard let mm = matmul(key), let engine else { return false }
        singleThreadedOpenMP()
        var stream: dnnl_stream_t?
        guard dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success else { return false }
        defer { dnnl_stream_destroy(stream) }
        var ma: dnnl_memory_t?, mb: dnnl_memory_t?, mc: dnnl_memory_t?
        defer { dnnl_memory_destroy(ma); dnnl_memory_destroy(mb); dnnl_memory_destroy(mc) }
        guard dnnl_memory_create(&ma, &mm.a, engine, UnsafeMutableRawPointer(mutating: a)) == dnnl_success,
              dnnl_memory_create(&mb, &mm.b, engine, UnsafeMutableRawPointer(mutating: b)) == dnnl_success,
              dnnl_memory_create(&mc, &mm.c, engine, c) == dnnl_success else { return false }
        var args = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: ma), dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: mb),
                    dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: mc)]
        let status = dnnl_primitive_execute(mm.primitive, stream, 3, &args)
        // The arguments match the descriptors the primitive was compiled for, so an error
        // here is a bug, not a condition to recover from (C may be half written).
        precondition(status == dnnl_success, "oneDNN matmul failed (\(status)) for \(key)")
        return true
    }
}

// MARK: bf16 matmul (the bf16 precision mode, Precision.swift)

extension OneDNN {
    /// C[m×n] = A[m×k] · B[n×k]ᵀ + beta · C with bf16 A and B and float32 C (oneDNN's
    /// `avx512_core_bf16` / AMX kernels), split into row blocks over the workers as
    /// `BLAS.sgemm` splits float32 GEMMs; false when oneDNN refuses the shape (nothing is
    /// written then: the first block is tried alone before the others start).
    static func gemmBF16(m: Int, n: Int, k: Int, a: UnsafePointer<UInt16>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
                         beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) -> Bool {
        if m == 0 || n == 0 { return true }
        let parts = m * n * k >= 1 << 22 ? min(Parallel.threads, m / 32) : 1
        let tiles = (m + 31) / 32
        func block(_ p: Int, _ count: Int) -> Bool {
            let lo = count == 1 ? 0 : tiles * p / count * 32, hi = count == 1 ? m : min(m, tiles * (p + 1) / count * 32)
            guard lo < hi else { return true }
            let key = Key(transA: false, transB: true, m: hi - lo, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc,
                          alpha: 1, beta: beta, input: .bf16)
            return gemm(key, a: a + lo * lda, b: b, c: c + lo * ldc)
        }
        if parts <= 1 { return block(0, 1) }
        guard block(0, parts) else { return false }
        let failed = Mutex(false)
        Parallel.forEach(parts - 1) { range in
            for p in range where !block(p + 1, parts) { failed.withLock { $0 = true } }
        }
        // Blocks of another height can only fail where the first did not by a oneDNN bug.
        precondition(!failed.withLock { $0 }, "oneDNN bf16 matmul refused a row block of \(m)x\(n)x\(k) it accepted for the first")
        return true
    }
}
