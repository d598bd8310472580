import CKernels
import Foundation

/// The number format GEMMs compute in: `--precision` on `generate`, `model.precision` in
/// recipes (docs/ARCHITECTURE.md, "Precision").
///
/// bf16 is the split `torch.autocast("cpu", dtype=torch.bfloat16)` makes: the inputs of
/// linear layers, convolutions and attention's two products are rounded to bf16 (8
/// significant bits) and multiplied with float32 accumulation; frozen GEMM weights are
/// held in bf16 (half the memory). Everything else — norms, softmax, activations, the
/// scheduler, losses, trainable weights (LoRA adapters, master weights), gradients and
/// optimizer states — stays float32. Outputs are float32 (autocast rounds a bf16 op's
/// output to bf16 as well; KoalaBooth keeps the float32 accumulator, one rounding fewer).
///
/// Where the CPU has `vdpbf16ps` (AVX512_BF16, AMX) linear layers run oneDNN's bf16
/// matmul; elsewhere the rounded values are multiplied by the float32 sgemm: the same
/// numbers, no faster than float32 (measured: docs/ARCHITECTURE.md), only smaller.
public enum Precision: String, CaseIterable, Sendable, CustomStringConvertible {
    /// bf16 where the CPU multiplies bf16 natively (AVX512_BF16 or AMX), else fp32.
    case auto
    case fp32
    case bf16

    public var description: String { rawValue }

    /// Parses a `--precision` / `model.precision` value, naming the accepted ones when wrong.
    public init(parsing raw: String) throws {
        guard let p = Precision(rawValue: raw.lowercased()) else { throw InvalidPrecision(value: raw) }
        self = p
    }

    public struct InvalidPrecision: Error, CustomStringConvertible {
        public let value: String
        public var description: String {
            "precision '\(value)' is not one of \(Precision.allCases.map(\.rawValue).joined(separator: ", ")); use auto (bf16 where the CPU has AVX512_BF16 or AMX), fp32 or bf16"
        }
    }

    /// `fp32` or `bf16`: what `auto` means on `cpu` (the other two stay as they are).
    public func resolved(for cpu: CPUFeatures = .current) -> Precision {
        guard self == .auto else { return self }
        return cpu.hasBF16 ? .bf16 : .fp32
    }

    /// The precision ops compute in now. Process-wide (commands set it once, before any
    /// model runs); `with(_:_:)` scopes it for tests.
    nonisolated(unsafe) public static var compute: Precision = .fp32

    /// Runs `body` with `compute` set to `precision` (resolved), restoring it after.
    public static func with<T>(_ precision: Precision, _ body: () throws -> T) rethrows -> T {
        let saved = compute
        compute = precision.resolved()
        defer { compute = saved }
        return try body()
    }

    /// Whether a GEMM whose weight has `storage` computes in bf16.
    @inline(__always) static func gemmInBF16(weight storage: Storage) -> Bool {
        compute == .bf16 || storage.bf16 != nil
    }

    /// Whether bf16 GEMMs run natively (oneDNN's bf16 matmul) rather than emulated.
    static var nativeBF16: Bool { CPUFeatures.current.hasBF16 && OneDNN.isAvailable }
}

/// bf16 conversions over buffers (the AVX2 kernels in CKernels/bf16.c), split over the
/// workers for large buffers.
public enum BF16 {
    public static func convert(_ x: UnsafePointer<Float>, to y: UnsafeMutablePointer<UInt16>, count n: Int) {
        chunks(n) { lo, len in kb_f32_to_bf16(x + lo, y + lo, len) }
    }

    public static func convert(_ x: UnsafePointer<UInt16>, to y: UnsafeMutablePointer<Float>, count n: Int) {
        chunks(n) { lo, len in kb_bf16_to_f32(x + lo, y + lo, len) }
    }

    /// y = float32(bf16(x)); `x` and `y` may be the same buffer.
    public static func round(_ x: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>, count n: Int) {
        chunks(n) { lo, len in kb_round_bf16(x + lo, y + lo, len) }
    }

    private static func chunks(_ n: Int, _ body: (Int, Int) -> Void) {
        let chunk = 1 << 16
        if n <= chunk { if n > 0 { body(0, n) }; return }
        Parallel.forEach((n + chunk - 1) / chunk) { range in
            for c in range { let lo = c * chunk; body(lo, min(chunk, n - lo)) }
        }
    }
}

extension Tensor {
    /// Whether this tensor's elements are held in bf16 (a frozen weight in bf16 mode).
    public var isHeldInBF16: Bool { storage.bf16 != nil }

    /// Holds this tensor's storage in bf16 from now on (half the memory), rounding each
    /// element to nearest even; for frozen GEMM weights only: afterwards only linear and
    /// conv2d may read it. No-op when already held so.
    public func holdInBF16() {
        precondition(!requiresGrad, "holdInBF16: a trainable tensor \(shape) must stay float32 (its updates need every bit)")
        precondition(offset == 0 && isContiguous && count == storage.count,
                     "holdInBF16: only a whole contiguous storage can be held in bf16, got a view \(shape)")
        storage.holdInBF16 { x, y, n in BF16.convert(x, to: y, count: n) }
    }

    /// The values as float32 (bf16 values widened exactly), for GEMMs on a tensor held in
    /// bf16; `self` when it is float32.
    func widenedFromBF16() -> Tensor {
        guard let half = storage.bf16 else { return self }
        let out = Tensor(empty: shape)
        BF16.convert(UnsafePointer(half) + offset, to: out.data, count: count)
        return out
    }

    /// The values rounded to bf16 (kept as float32), as autocast's cast of a GEMM input;
    /// gradients pass straight through, as through autocast's cast (its backward casts
    /// the gradient back, changing nothing in float32). Tensors held in bf16 are widened.
    public func roundedToBF16() -> Tensor {
        if isHeldInBF16 { return widenedFromBF16() }
        let x = contiguous()
        let out = Tensor(empty: shape)
        BF16.round(x.data, to: out.data, count: count)
        return record(out, [x], "roundedToBF16") { g, _ in [g] }
    }
}

extension Precision: Codable {}
