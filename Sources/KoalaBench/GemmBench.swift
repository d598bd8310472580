import KoalaTensor

enum GemmBench {
    static var cases: [BenchCase] {
        [2048, 4096].map { n in
            BenchCase(name: "sgemm \(n)x\(n)x\(n)", flops: 2 * Double(n * n * n)) {
                let a = Tensor.full([n, n], 0.5), b = Tensor.full([n, n], 0.25)
                return { _ = noGrad { a.matmul(b) } }
            }
        } + unetShapes
    }

    /// The GEMM shape classes of the KOALA-700M U-Net at 512 px (64x64 latent), through
    /// each backend (`just bench gemm`). M x N x K, `t` where an operand is transposed.
    /// `perWorker`: run the way convolution and attention run them, one independent GEMM
    /// per worker inside `BLAS.singleThreaded` (the FLOPs count every worker's).
    static let shapes: [(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, perWorker: Bool, what: String)] = [
        (4096, 640, 640, false, true, false, "attention projections, 32x32 stage"),
        (4096, 5120, 640, false, true, false, "GEGLU projection, 32x32"),
        (4096, 640, 2560, false, true, false, "feed-forward out, 32x32"),
        (256, 1280, 1280, false, true, false, "attention projections, 16x16"),
        (256, 10240, 1280, false, true, false, "GEGLU projection, 16x16"),
        (77, 1280, 2048, false, true, false, "cross-attention keys/values"),
        (1280, 256, 11520, false, false, false, "3x3 conv 1280ch 16x16 (im2col)"),
        (640, 1024, 320, false, false, false, "1x1 shortcut conv 32x32"),
        (640, 640, 4096, true, false, false, "weight gradient 640x640 (backward)"),
        (512, 512, 64, false, true, true, "attention scores tile"),
        (512, 64, 512, false, false, true, "attention values tile"),
        (320, 256, 320, false, false, true, "Winograd 320ch 64x64 band"),
        (640, 128, 640, false, false, true, "Winograd 640ch 32x32 band"),
        (128, 256, 1920, false, false, true, "Winograd channel block 1920->640"),
    ]

    static var unetShapes: [BenchCase] {
        shapes.flatMap { s in
            GEMMBackend.allCases.map { backend in
                let t = (s.transA ? "t" : "n") + (s.transB ? "t" : "n")
                let workers = s.perWorker ? Parallel.threads : 1
                return BenchCase(name: "gemm \(s.m)x\(s.n)x\(s.k) \(t)\(s.perWorker ? " per-worker" : "") \(backend.rawValue)",
                                 flops: 2 * Double(s.m * s.n * s.k * workers), group: "gemm") {
                    var rng = RandomGenerator(seed: 0)
                    let a = Tensor.randn([workers, s.m * s.k], generator: &rng), b = Tensor.randn([workers, s.k * s.n], generator: &rng)
                    let c = Tensor(empty: [workers, s.m * s.n])
                    let (lda, ldb) = (s.transA ? s.m : s.k, s.transB ? s.k : s.n)
                    func one(_ w: Int) {
                        BLAS.sgemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, a: a.data + w * s.m * s.k, lda: lda,
                                   b: b.data + w * s.k * s.n, ldb: ldb, c: c.data + w * s.m * s.n, ldc: s.n)
                    }
                    return {
                        let saved = BLAS.forcedBackend
                        BLAS.forcedBackend = backend
                        defer { BLAS.forcedBackend = saved }
                        if s.perWorker {
                            BLAS.singleThreaded { Parallel.tasks(workers) { one($0) } }
                        } else {
                            one(0)
                        }
                    }
                }
            }
        }
    }
}
