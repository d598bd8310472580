import Foundation

/// A matrix operand for sgemm: the last two dims of a tensor, row-major or transposed,
/// with a constant stride between batch items (0 when shared by every item).
struct MatrixOperand {
    let base: UnsafeMutablePointer<Float>
    let ld: Int
    let trans: Bool
    let batchStride: Int
    let tensor: Tensor  // keeps the storage alive

    /// Views `t`'s last two dims as sgemm operands without copying when its layout
    /// allows, else from a contiguous copy.
    init(_ t: Tensor) {
        var src = t
        var l = MatrixOperand.layout(src)
        if l == nil { src = t.contiguous(); l = MatrixOperand.layout(src) }
        base = src.data
        ld = l!.ld; trans = l!.trans; batchStride = l!.bstride
        tensor = src
    }

    private static func layout(_ t: Tensor) -> (ld: Int, trans: Bool, bstride: Int)? {
        let r = t.rank, rows = t.shape[r - 2], cols = t.shape[r - 1]
        let sr = t.strides[r - 2], sc = t.strides[r - 1]
        let ld: Int, trans: Bool
        if (sc == 1 || cols == 1) && (sr >= cols || rows == 1) { ld = max(sr, cols, 1); trans = false }
        else if (sr == 1 || rows == 1) && (sc >= rows || cols == 1) { ld = max(sc, rows, 1); trans = true }
        else { return nil }
        // Batch dims must collapse into one stride.
        var bstride: Int? = nil
        var acc = 1
        for d in stride(from: r - 3, through: 0, by: -1) where t.shape[d] != 1 {
            if let s = bstride { if t.strides[d] != s * acc { return nil } } else { bstride = t.strides[d] }
            acc *= t.shape[d]
        }
        return (ld, trans, bstride ?? 0)
    }
}

extension Tensor {
    /// Matrix product over the last two dims. Batch dims must be equal, or one side
    /// 2-D (shared by every batch item), as `torch.matmul` for these cases.
    public func matmul(_ other: Tensor) -> Tensor {
        boundaryCheck(rank >= 2 && other.rank >= 2, "matmul needs rank >= 2, got \(shape) and \(other.shape)")
        let m = shape[rank - 2], k = shape[rank - 1], n = other.shape[other.rank - 1]
        boundaryCheck(other.shape[other.rank - 2] == k, "matmul: inner dims differ, \(shape) x \(other.shape)")
        let batchA = Array(shape.dropLast(2)), batchB = Array(other.shape.dropLast(2))
        boundaryCheck(batchA == batchB || batchA.isEmpty || batchB.isEmpty, "matmul: batch dims differ, \(shape) x \(other.shape)")
        let batchShape = batchA.isEmpty ? batchB : batchA
        let batch = batchShape.reduce(1, *)
        let out = Tensor(empty: batchShape + [m, n])
        let a = MatrixOperand(self), b = MatrixOperand(other)
        if batch > 1, batchB.isEmpty, !a.trans, a.ld == k, a.batchStride == m * k {
            // Batched rows times one shared matrix: a single tall GEMM.
            BLAS.sgemm(transA: false, transB: b.trans, m: batch * m, n: n, k: k,
                       a: a.base, lda: a.ld, b: b.base, ldb: b.ld, c: out.data, ldc: n)
        } else {
            for i in 0..<batch {
                BLAS.sgemm(transA: a.trans, transB: b.trans, m: m, n: n, k: k,
                           a: a.base + i * a.batchStride, lda: a.ld, b: b.base + i * b.batchStride, ldb: b.ld,
                           c: out.data + i * m * n, ldc: n)
            }
        }
        let lhs = self, rhs = other
        return record(out, [lhs, rhs], "matmul") { g, needs in
            let ga = needs[0] ? g.matmul(rhs.transposed()).sum(toShape: lhs.shape) : nil
            let gb = needs[1] ? lhs.transposed().matmul(g).sum(toShape: rhs.shape) : nil
            return [ga, gb]
        }
    }

    /// `x · weightᵀ + bias` over the last dim, as `torch.nn.functional.linear`:
    /// weight is [out, in], bias [out].
    public func linear(_ weight: Tensor, _ bias: Tensor? = nil) -> Tensor {
        // bf16 precision mode (BF16Ops.swift).
        if Precision.gemmInBF16(weight: weight.storage) { return linearInBF16(weight, bias) }
        return linearFloat32(weight, bias)
    }

    func linearFloat32(_ weight: Tensor, _ bias: Tensor?) -> Tensor {
        let inF = shape[rank - 1], outF = weight.shape[0]
        boundaryCheck(weight.rank == 2 && weight.shape[1] == inF, "linear: input \(shape) does not fit weight \(weight.shape)")
        if let bias { boundaryCheck(bias.shape == [outF], "linear: bias \(bias.shape) for weight \(weight.shape)") }
        let x = contiguous(), w = weight.contiguous()
        let rows = count / inF
        let out = Tensor(empty: Array(shape.dropLast()) + [outF])
        if let bias {
            let b = bias.contiguous().data, o = out.data
            for r in 0..<rows { (o + r * outF).update(from: b, count: outF) }
        }
        BLAS.sgemm(transA: false, transB: true, m: rows, n: outF, k: inF, a: x.data, lda: inF,
                   b: w.data, ldb: inF, beta: bias == nil ? 0 : 1, c: out.data, ldc: outF)
        let inputs = bias.map { [x, w, $0] } ?? [x, w]
        return record(out, inputs, "linear") { g, needs in
            let gc = g.contiguous()
            var grads: [Tensor?] = Array(repeating: nil, count: inputs.count)
            if needs[0] {
                let gx = Tensor(empty: x.shape)
                BLAS.sgemm(transA: false, transB: false, m: rows, n: inF, k: outF, a: gc.data, lda: outF,
                           b: w.data, ldb: inF, c: gx.data, ldc: inF)
                grads[0] = gx
            }
            if needs[1] {
                let gw = Tensor(empty: w.shape)
                BLAS.sgemm(transA: true, transB: false, m: outF, n: inF, k: rows, a: gc.data, lda: outF,
                           b: x.data, ldb: inF, c: gw.data, ldc: inF)
                grads[1] = gw
            }
            if inputs.count == 3, needs[2] { grads[2] = gc.sum(toShape: [outF]) }
            return grads
        }
    }
}
