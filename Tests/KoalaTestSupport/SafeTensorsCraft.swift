import Foundation
import KoalaTensor

/// Hand-made and mutated safetensors files for the crafted-file tests.
public enum SafeTensorsCraft {
    /// An 8-byte little-endian header length followed by `rest`.
    public static func bytes(headerLength: UInt64, rest: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: headerLength.littleEndian, Array.init) + rest
    }

    /// A file with `header` (padded to 8 bytes) and `data` zero bytes after it.
    public static func file(header: String, data: Int) -> [UInt8] {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        return bytes(headerLength: UInt64(h.count), rest: h + [UInt8](repeating: 0, count: data))
    }

    /// The kinds of damage `mutated` does.
    public enum Mutation: CaseIterable, Hashable, Sendable {
        case truncation, headerLengthBytes, jsonCorruption, hugeLength, outOfRangeOffsets,
             overlappingOffsets, badDType, overflowingShape, deepNesting
    }

    /// One tensor's header entry as JSON fragments, so mutations can put anything there.
    struct Spec {
        var name: String, dtype: String, shape: String, offsets: String
        let size: Int, begin: Int
    }

    static func validSpecs() -> [Spec] {
        let tensors: [(String, String, [Int], Int)] = [
            ("a.weight", "F32", [2, 3], 4), ("b", "F16", [4], 2), ("c.bias", "BF16", [1, 2, 2], 2),
            ("d", "I64", [2], 8), ("e", "F64", [], 8), ("f", "I32", [0], 4), ("g", "F32", [3], 4),
        ]
        var offset = 0
        return tensors.map { name, dtype, shape, size in
            let bytes = shape.reduce(1, *) * size
            defer { offset += bytes }
            return Spec(name: "\"\(name)\"", dtype: "\"\(dtype)\"", shape: "[\(shape.map(String.init).joined(separator: ","))]",
                        offsets: "[\(offset),\(offset + bytes)]", size: bytes, begin: offset)
        }
    }

    static func assemble(_ specs: [Spec], headerPrefix: String = "", dataSize: Int, rng: inout SplitMix64) -> [UInt8] {
        let body = specs.map { "\($0.name):{\"dtype\":\($0.dtype),\"shape\":\($0.shape),\"data_offsets\":\($0.offsets)}" }
        let header = "{\(headerPrefix)\"__metadata__\":{\"format\":\"pt\"}," + body.joined(separator: ",") + "}"
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        let data = (0..<dataSize).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        return bytes(headerLength: UInt64(h.count), rest: h + data)
    }

    /// A valid file damaged in the way `kind` names, chosen by `rng`.
    public static func mutated(_ kind: Mutation, rng: inout SplitMix64) -> [UInt8] {
        var specs = validSpecs()
        let dataSize = specs.map(\.size).reduce(0, +)
        let i = rng.below(specs.count)
        switch kind {
        case .truncation:
            let full = assemble(specs, dataSize: dataSize, rng: &rng)
            return Array(full.prefix(rng.below(full.count)))
        case .headerLengthBytes:
            var full = assemble(specs, dataSize: dataSize, rng: &rng)
            if rng.below(2) == 0 {
                full[rng.below(8)] = UInt8(truncatingIfNeeded: rng.next())
            } else {
                let n = UInt64(full.count)
                let length = rng.pick([0, 1, 1 << 63, UInt64.max, UInt64.max - 7, n - 7, n, 1 << 40, rng.next()])
                full.replaceSubrange(0..<8, with: withUnsafeBytes(of: length.littleEndian, Array.init))
            }
            return full
        case .jsonCorruption:
            var full = assemble(specs, dataSize: dataSize, rng: &rng)
            let headerLength = Int(full[0]) | Int(full[1]) << 8
            let junk = Array("{}[]\",:-.0123456789eE \\nulltrue".utf8) + [0, 0xFF, 0xC3]
            for _ in 0...rng.below(4) { full[8 + rng.below(headerLength)] = rng.pick(junk) }
            return full
        case .hugeLength:
            let dim = rng.pick(["4294967296", "9223372036854775807", "-1", "99999999999999999999", "1e30", "1.5",
                                "2147483648", "-9223372036854775808", "4611686018427387904"])
            specs[i].shape = rng.below(2) == 0 ? "[\(dim)]" : "[2,\(dim),3]"
        case .outOfRangeOffsets:
            let s = specs[i]
            specs[i].offsets = rng.pick([
                "[\(s.begin),\(dataSize + 1 + rng.below(100))]", "[-8,\(s.begin + s.size - 8)]", "[\(s.begin + s.size),\(s.begin)]",
                "[9223372036854775807,9223372036854775807]", "[\(s.begin),18446744073709551615]",
                "[\(Int.max - s.size),\(Int.max)]", "[\(s.begin),\(s.begin + s.size + 1)]",
            ])
        case .overlappingOffsets:
            let j = (i + 1 + rng.below(specs.count - 1)) % specs.count
            let start = specs[j].begin + rng.below(max(specs[j].size, 1))
            specs[i].offsets = "[\(start),\(start + specs[i].size)]"
        case .badDType:
            specs[i].dtype = rng.pick(["\"U8\"", "\"F8_E4M3\"", "\"\"", "3", "null", "\"f32\"", "[\"F32\"]", "\"BOOL\"", "\"I32\"", "\"I16\""])
        case .overflowingShape:
            // Element counts whose byte count wraps in Int arithmetic, some to exactly
            // the 24 bytes tensor a.weight spans.
            specs[0].shape = rng.pick(["[4611686018427387910]", "[2,2305843009213693955]", "[4294967296,4294967296,4]",
                                       "[65536,65536,65536,65536]", "[3037000500,3037000500]", "[1,4611686018427387904,6]"])
        case .deepNesting:
            let depth = 500 + rng.below(20_000)
            specs[i].shape = String(repeating: "[", count: depth) + String(repeating: "]", count: rng.below(2) * depth)
        }
        return assemble(specs, dataSize: dataSize, rng: &rng)
    }
}

/// A deterministic 64-bit generator (SplitMix64) for the mutations.
public struct SplitMix64: Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    public mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}

/// While alive, opens a FIFO for writing (without blocking) every 100 ms after a 3 s
/// grace period, so code stuck opening it for reading gets a writer and then
/// end-of-file: a test of "FIFOs are refused" fails instead of hanging on code that
/// blocks.
public final class FIFOUnblocker: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false

    public init(path: String) {
        Thread.detachNewThread { [self] in
            Thread.sleep(forTimeInterval: 3)
            while !isStopped {
                let fd = open(path, O_WRONLY | O_NONBLOCK)
                if fd >= 0 { close(fd) }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    public func stop() { lock.lock(); stopped = true; lock.unlock() }
}
