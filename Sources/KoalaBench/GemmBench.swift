import KoalaTensor

enum GemmBench {
    static var cases: [BenchCase] {
        [2048, 4096].map { n in
            BenchCase(name: "sgemm \(n)x\(n)x\(n)", flops: 2 * Double(n * n * n)) {
                let a = Tensor.full([n, n], 0.5), b = Tensor.full([n, n], 0.25)
                return { _ = noGrad { a.matmul(b) } }
            }
        }
    }
}
