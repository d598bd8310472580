import Foundation

/// Conversions between float32 and the 16-bit storage formats checkpoints use.
public enum HalfPrecision {
    @inline(__always) public static func float(fromBF16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Round to nearest even, as PyTorch's `.to(torch.bfloat16)`; NaN stays NaN.
    @inline(__always) public static func bf16(from f: Float) -> UInt16 {
        let u = f.bitPattern
        if f.isNaN { return UInt16(truncatingIfNeeded: (u >> 16) | 0x40) }
        let rounding = 0x7FFF + ((u >> 16) & 1)
        return UInt16(truncatingIfNeeded: (u &+ rounding) >> 16)
    }

    @inline(__always) public static func float(fromF16 bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    @inline(__always) public static func f16(from f: Float) -> UInt16 {
        Float16(f).bitPattern
    }
}
