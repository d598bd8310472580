import Foundation

// The bf16 precision mode's GEMM ops (Precision.swift): linear, conv2d and attention
// enter here when `Precision.compute` is bf16 or their weight is held in bf16, and run
// the float32 kernels on bf16-rounded operands, or oneDNN's bf16 matmul where the CPU has
// AVX512_BF16 (linear layers).
//
// What torch 2.15's CPU autocast does (checked in the reference environment, output
// dtypes under `torch.autocast("cpu", dtype=torch.bfloat16)`): linear, matmul, baddbmm,
// conv2d and scaled_dot_product_attention cast every floating input to bf16 and return
// bf16; group/layer norm, softmax, SiLU, GELU and interpolation have no cast of their
// own (bf16 in, bf16 out; float32 in, float32 out); a bf16 + float32 add is float32;
// mse_loss is float32. Mirrored: the casts of the inputs of linear, conv2d and
// attention (query, key, value), with backward passing the gradient through the cast as
// autocast's does. Not mirrored, by design (issue 14): outputs stay float32, so the norms,
// activations and residual adds after a GEMM see float32 values where autocast's see
// bf16 ones (one rounding per op fewer; AutocastParityTests measures the difference).

extension Tensor {
    /// `linear` in bf16: every operand rounded to bf16, float32 accumulation and output.
    func linearInBF16(_ weight: Tensor, _ bias: Tensor?) -> Tensor {
        if Precision.nativeBF16, let out = linearNativeBF16(weight, bias) { return out }
        return roundedToBF16().linearFloat32(weight.roundedToBF16(), bias?.roundedToBF16())
    }

    /// `conv2d` in bf16 (emulated on every CPU: im2col and Winograd GEMMs in float32 on the
    /// rounded input and weight).
    func conv2dInBF16(_ weight: Tensor, _ bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        roundedToBF16().conv2dFloat32(weight.roundedToBF16(), bias?.roundedToBF16(), stride: stride, padding: padding)
    }

    /// `linear` through oneDNN's bf16 matmul (bf16 A and B, float32 C); nil where oneDNN
    /// refuses the shape. Backward runs in float32 on the same rounded operands.
    func linearNativeBF16(_ weight: Tensor, _ bias: Tensor?) -> Tensor? {
        let inF = shape[rank - 1], outF = weight.shape[0]
        precondition(weight.rank == 2 && weight.shape[1] == inF, "linear: input \(shape) does not fit weight \(weight.shape)")
        let x = contiguous(), rows = count / inF
        let xHalf = BF16Buffer(x)
        let wHalf = BF16Buffer(weight)
        let b = bias?.roundedToBF16()
        let out = Tensor(empty: Array(shape.dropLast()) + [outF])
        if let b { for r in 0..<rows { (out.data + r * outF).update(from: b.data, count: outF) } }
        guard OneDNN.gemmBF16(m: rows, n: outF, k: inF, a: xHalf.pointer, lda: inF, b: wHalf.pointer, ldb: inF,
                              beta: b == nil ? 0 : 1, c: out.data, ldc: outF) else { return nil }
        let inputs = b.map { [x, weight, $0] } ?? [x, weight]
        return record(out, inputs, "linearBF16") { g, needs in
            let gc = g.contiguous()
            var grads: [Tensor?] = Array(repeating: nil, count: inputs.count)
            if needs[0] {
                let w = weight.roundedToBF16().detached(), gx = Tensor(empty: x.shape)
                BLAS.sgemm(transA: false, transB: false, m: rows, n: inF, k: outF, a: gc.data, lda: outF,
                           b: w.data, ldb: inF, c: gx.data, ldc: inF)
                grads[0] = gx
            }
            if needs[1] {
                let xr = x.roundedToBF16().detached(), gw = Tensor(empty: weight.shape)
                BLAS.sgemm(transA: true, transB: false, m: outF, n: inF, k: rows, a: gc.data, lda: outF,
                           b: xr.data, ldb: inF, c: gw.data, ldc: inF)
                grads[1] = gw
            }
            if inputs.count == 3, needs[2] { grads[2] = gc.sum(toShape: [outF]) }
            return grads
        }
    }
}

/// A contiguous tensor's elements as bf16 bits: its own storage when held in bf16, else
/// a rounded copy.
final class BF16Buffer {
    let pointer: UnsafePointer<UInt16>
    private let owned: UnsafeMutablePointer<UInt16>?
    private let keep: Tensor

    init(_ t: Tensor) {
        keep = t
        if let half = t.storage.bf16, t.isContiguous {
            pointer = UnsafePointer(half) + t.offset
            owned = nil
        } else {
            let c = t.contiguous()
            let buf = UnsafeMutablePointer<UInt16>.allocate(capacity: max(c.count, 1))
            BF16.convert(c.data, to: buf, count: c.count)
            pointer = UnsafePointer(buf)
            owned = buf
        }
    }

    deinit { owned?.deallocate() }
}
