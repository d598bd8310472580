import CKernels
import Foundation
import KoalaTensor

/// Blockwise 8-bit quantization against a 256-entry code, as bitsandbytes' CPU kernel
/// (`quantize_blockwise` / `dequantize_blockwise`, bitsandbytes 0.50) does it.
///
/// Each block of `blockSize` values is scaled by its own absmax (max |x|) into [-1, 1].
/// The nearest code is not searched exactly: the CPU kernel maps the scaled value to
/// one of 65536 evenly spaced bins (`trunc((v + 1) * 0.5 * 65535 + 0.5)`) and reads
/// the code nearest to that bin's centre from a table. Values much smaller than the
/// bin width (3e-5 of the block's absmax) therefore snap to the code nearest to
/// ±1.5e-5 rather than to 0. Reproducing this keeps optimizer states bit-identical to
/// bitsandbytes. A block whose absmax is 0 gets code 0 everywhere.
public struct BlockwiseQuantizer: Sendable {
    /// Block size of bitsandbytes' 8-bit optimizers.
    public static let optimizerBlockSize = 256
    static let binCount = 65536

    /// The code: 256 sorted values in [-1, 1].
    public let code: [Float]
    /// For each of the 65536 bins, the index of the code nearest to the bin's centre,
    /// then 3 bytes of padding: the AVX2 kernels gather 4 bytes at each bin.
    let table: [UInt8]

    public init(code: [Float]) {
        precondition(code.count == 256, "a quantization code has 256 entries, got \(code.count)")
        self.code = code
        var midpoints = [Float](repeating: 0, count: 255)
        for i in 0..<255 { midpoints[i] = 0.5 * (code[i] + code[i + 1]) }
        var table = [UInt8](repeating: 0, count: Self.binCount + 3)
        var c = 0
        let last = Float(Self.binCount - 1)
        for i in 0..<Self.binCount {
            let centre: Float = -1 + (2 * Float(i)) / last
            while c < 255 && midpoints[c] < centre { c += 1 }
            table[i] = UInt8(c)
        }
        self.table = table
    }

    /// Quantizer for the signed dynamic map (Adam's first moment).
    public static let signed = BlockwiseQuantizer(code: QuantizationMap.signed)
    /// Quantizer for the unsigned dynamic map (Adam's second moment).
    public static let unsigned = BlockwiseQuantizer(code: QuantizationMap.unsigned)

    /// Who runs the blockwise loops. The vector kernels (CKernels/adam8bit.c) give the
    /// same codes, absmax and parameters as the Swift code, bit for bit.
    enum Kernel: Int32, CaseIterable, Comparable, Sendable {
        case swift = 0, avx2 = 1, avx512 = 2

        static func < (a: Kernel, b: Kernel) -> Bool { a.rawValue < b.rawValue }

        /// What this CPU runs, lowered by `KOALABOOTH_ISA=avx2` (for comparisons).
        static let best: Kernel = {
            let cpu = Kernel(rawValue: kb_adam8bit_best_level()) ?? .swift
            return ProcessInfo.processInfo.environment["KOALABOOTH_ISA"] == "avx2" ? min(cpu, .avx2) : cpu
        }()

        /// Every kernel this CPU can run.
        static var available: [Kernel] { allCases.filter { $0 <= best } }
    }

    /// Quantizes one block of `count` values: writes the codes, returns the block's absmax.
    @inline(__always)
    static func quantizeBlock(_ x: UnsafePointer<Float>, count: Int, codes: UnsafeMutablePointer<UInt8>,
                              table: UnsafePointer<UInt8>) -> Float {
        var absmax: Float = 0
        for i in 0..<count { absmax = Swift.max(absmax, abs(x[i])) }
        if absmax == 0 {
            codes.update(repeating: 0, count: count)
            return 0
        }
        // The reference multiplies by the float reciprocal and rounds after every
        // operation (no fused multiply-add); bin indices depend on it.
        let inverse = 1 / absmax
        for i in 0..<count {
            let v = Swift.min(Swift.max(x[i] * inverse, -1), 1)
            var t = v + 1
            t = t * 0.5
            t = t * 65535
            t = t + 0.5
            codes[i] = table[t == t ? Int(t) : 0]  // NaN (a broken gradient) must not trap
        }
        return absmax
    }

    /// Runs `body` with the bin table's base address.
    @inline(__always)
    func withTable<R>(_ body: (UnsafePointer<UInt8>) -> R) -> R {
        table.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Quantizes `count` values in blocks of `blockSize` into `codes` (one byte per value)
    /// and `absmax` (one float per block), in parallel over blocks.
    public func quantize(_ x: UnsafePointer<Float>, count: Int, blockSize: Int = optimizerBlockSize,
                         codes: UnsafeMutablePointer<UInt8>, absmax: UnsafeMutablePointer<Float>) {
        quantize(x, count: count, blockSize: blockSize, codes: codes, absmax: absmax, kernel: .best)
    }

    func quantize(_ x: UnsafePointer<Float>, count: Int, blockSize: Int = optimizerBlockSize,
                  codes: UnsafeMutablePointer<UInt8>, absmax: UnsafeMutablePointer<Float>, kernel: Kernel) {
        precondition(blockSize > 0, "block size must be positive")
        let blocks = (count + blockSize - 1) / blockSize
        withTable { t in
            Parallel.forEach(blocks, grain: max(1, 16384 / blockSize)) { range in
                if kernel != .swift {
                    kb_quantize_blockwise(kernel.rawValue, x, count, blockSize, range.lowerBound, range.upperBound, codes, absmax, t)
                    return
                }
                for b in range {
                    let lo = b * blockSize
                    absmax[b] = Self.quantizeBlock(x + lo, count: Swift.min(blockSize, count - lo), codes: codes + lo, table: t)
                }
            }
        }
    }

    /// Decodes `count` values: `code[codes[i]] * absmax[i / blockSize]`.
    public func dequantize(codes: UnsafePointer<UInt8>, absmax: UnsafePointer<Float>, count: Int,
                           blockSize: Int = optimizerBlockSize, into out: UnsafeMutablePointer<Float>) {
        precondition(blockSize > 0, "block size must be positive")
        let blocks = (count + blockSize - 1) / blockSize
        code.withUnsafeBufferPointer { cb in
            let c = cb.baseAddress!
            Parallel.forEach(blocks, grain: max(1, 16384 / blockSize)) { range in
                for b in range {
                    let lo = b * blockSize, hi = Swift.min(lo + blockSize, count), scale = absmax[b]
                    for i in lo..<hi { out[i] = c[Int(codes[i])] * scale }
                }
            }
        }
    }

    /// Quantizes a tensor (flattened): its codes and one absmax per block.
    public func quantize(_ t: Tensor, blockSize: Int = optimizerBlockSize) -> (codes: [UInt8], absmax: [Float]) {
        quantize(t, blockSize: blockSize, kernel: .best)
    }

    func quantize(_ t: Tensor, blockSize: Int = optimizerBlockSize, kernel: Kernel) -> (codes: [UInt8], absmax: [Float]) {
        let x = t.contiguous()
        let n = x.count, blocks = (n + blockSize - 1) / blockSize
        var codes = [UInt8](repeating: 0, count: n)
        var absmax = [Float](repeating: 0, count: blocks)
        codes.withUnsafeMutableBufferPointer { cb in
            absmax.withUnsafeMutableBufferPointer { ab in
                quantize(x.data, count: n, blockSize: blockSize, codes: cb.baseAddress!, absmax: ab.baseAddress!, kernel: kernel)
            }
        }
        return (codes, absmax)
    }

    /// Decodes codes made by `quantize` into a tensor of `shape`.
    public func dequantize(codes: [UInt8], absmax: [Float], shape: [Int], blockSize: Int = optimizerBlockSize) -> Tensor {
        let out = Tensor(empty: shape)
        precondition(codes.count == out.count, "\(codes.count) codes for shape \(shape)")
        precondition(absmax.count == (codes.count + blockSize - 1) / blockSize,
                     "\(absmax.count) absmax values for \(codes.count) codes in blocks of \(blockSize)")
        codes.withUnsafeBufferPointer { cb in
            absmax.withUnsafeBufferPointer { ab in
                dequantize(codes: cb.baseAddress!, absmax: ab.baseAddress!, count: codes.count, blockSize: blockSize, into: out.data)
            }
        }
        return out
    }
}
