import Foundation

/// A reference-counted, 64-byte aligned buffer of `Float`s. Tensors are views onto a
/// storage; several tensors (a reshape, a slice) may share one.
public final class Storage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    /// Uninitialised storage: every op that creates one writes all of it.
    public init(count: Int) {
        boundaryCheck(count >= 0, "negative storage size")
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    public convenience init(zeros count: Int) {
        self.init(count: count)
        pointer.initialize(repeating: 0, count: count)
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}
