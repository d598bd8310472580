import Foundation

/// A reference-counted, 64-byte aligned buffer of `Float`s. Tensors are views onto a
/// storage; several tensors (a reshape, a slice) may share one.
///
/// A frozen weight may instead be held in bf16 (`holdInBF16()`, the bf16 precision mode
/// in Precision.swift): then `bf16` holds the elements and the float buffer is gone.
public final class Storage: @unchecked Sendable {
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// The elements as bf16 bits, for a storage held in bf16; nil for a float32 one.
    public private(set) var bf16: UnsafeMutablePointer<UInt16>?

    /// Uninitialised storage: every op that creates one writes all of it.
    public init(count: Int) {
        boundaryCheck(count >= 0, "negative storage size")
        self.count = count
        pointer = Storage.allocateFloats(count)
    }

    public convenience init(zeros count: Int) {
        self.init(count: count)
        pointer.initialize(repeating: 0, count: count)
    }

    private static func allocateFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
        return raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// Replaces the float32 elements by their bf16 rounding (`convert` writes `count`
    /// bf16 values from the float buffer) and frees the float buffer: half the memory.
    /// Only for data nothing writes again (frozen weights); `Tensor.data` refuses it after.
    func holdInBF16(_ convert: (UnsafePointer<Float>, UnsafeMutablePointer<UInt16>, Int) -> Void) {
        guard bf16 == nil else { return }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 2, alignment: 64)
        let half = raw.bindMemory(to: UInt16.self, capacity: max(count, 1))
        convert(pointer, half, count)
        UnsafeMutableRawPointer(pointer).deallocate()
        pointer = Storage.allocateFloats(0)  // a valid one-element block, never read (see Tensor.data)
        bf16 = half
    }

    deinit {
        UnsafeMutableRawPointer(pointer).deallocate()
        if let bf16 { UnsafeMutableRawPointer(bf16).deallocate() }
    }
}
