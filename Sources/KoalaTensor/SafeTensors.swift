import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Element types KoalaBooth reads from and writes to safetensors files.
public enum SafeTensorsDType: String, Sendable {
    case F32, F16, BF16, F64, I64, I32

    public var byteSize: Int {
        switch self {
        case .F16, .BF16: 2
        case .F32, .I32: 4
        case .F64, .I64: 8
        }
    }
}

public struct SafeTensorsError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A read-only memory map of a whole file, unmapped when the last user lets go.
final class MappedFile: @unchecked Sendable {
    let base: UnsafeRawPointer
    let size: Int

    init(path: String, maxBytes: Int) throws {
        let fd: Int32
        (fd, size) = try BoundedFile.openRegular(path)
        defer { close(fd) }
        guard size <= maxBytes else { throw BoundedFile.tooLarge(path, size: size, limit: maxBytes) }
        if size == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 8))
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw SafeTensorsError("cannot map \(path) into memory: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    /// Drops the mapped pages wholly inside `lo..<hi` from this process's memory: once a
    /// tensor has been copied out, its file pages only inflated the resident size while a
    /// model loaded (1.4 GiB for KOALA's fp16 text_encoder_2). They stay in the page
    /// cache, and a later read maps them again.
    func release(from lo: Int, to hi: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (lo + page - 1) / page * page, end = hi / page * page
        guard size > 0, end > start else { return }
        madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }

    deinit {
        if size == 0 { UnsafeMutableRawPointer(mutating: base).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }
}

/// A safetensors file opened lazily: the header is parsed and checked on open, tensor
/// data is read from the memory map (and converted to float32) only when asked for.
public struct SafeTensorsFile: Sendable {
    public struct Entry: Sendable {
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        let begin: Int, end: Int
    }

    public let path: String
    public let metadata: [String: String]
    public let entries: [String: Entry]
    private let file: MappedFile
    private let dataStart: Int

    public var names: [String] { entries.keys.sorted() }

    /// The largest header read (the limit of the reference safetensors library).
    public static let headerLimit = 100_000_000

    /// Opens `path` and checks its whole header: every size and offset with checked
    /// arithmetic, so a crafted file is refused with an error naming the file and the
    /// field, never a trap or a wrapped size. `maxBytes` refuses larger files before
    /// mapping them.
    public init(path: String, maxBytes: Int = .max) throws {
        let file: MappedFile
        do { file = try MappedFile(path: path, maxBytes: maxBytes) } catch let e as BoundedFile.Error {
            throw SafeTensorsError("cannot open \(path): \(e.reason)")
        }
        self.path = path
        self.file = file
        func fail(_ problem: String, fix: String = "re-download or re-export it") -> SafeTensorsError {
            SafeTensorsError("\(path) is not a valid safetensors file: \(problem); \(fix)")
        }
        guard file.size >= 8 else { throw fail("it is truncated (\(file.size) bytes, too short for the 8-byte header length)") }
        // Compared as UInt64: converting a length >= 2^63 to Int first would trap.
        let rawLength = UInt64(littleEndian: file.base.loadUnaligned(as: UInt64.self))
        guard rawLength <= UInt64(file.size - 8) else {
            throw fail("it is truncated or corrupt (its header length field says \(rawLength) bytes but only \(file.size - 8) follow it)")
        }
        let headerLength = Int(rawLength)
        guard headerLength <= Self.headerLimit else {
            throw fail("its header is \(headerLength) bytes, more than the \(Self.headerLimit) bytes safetensors allows")
        }
        let headerBytes = UnsafeRawBufferPointer(start: file.base + 8, count: headerLength)
        guard headerBytes.first == UInt8(ascii: "{"),
              let json = try? JSONSerialization.jsonObject(with: Data(headerBytes)), let header = json as? [String: Any]
        else { throw fail("it has a bad header (not a JSON object): it is not safetensors, or is corrupt") }
        dataStart = 8 + headerLength
        let dataSize = file.size - dataStart
        var meta: [String: String] = [:]
        var entries: [String: Entry] = [:]
        for (key, value) in header {
            if key == "__metadata__" {
                guard let m = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in m { meta[k] = (v as? String) ?? "\(v)" }
                continue
            }
            let entry = try Self.entry(key, value, dataSize: dataSize, failWith: fail)
            entries[key] = entry
        }
        // The tensors must tile the data section in offset order: no overlap, no gap, no
        // trailing bytes (what the reference library checks).
        var next = 0
        for (key, e) in entries.sorted(by: { ($0.value.begin, $0.value.end, $0.key) < ($1.value.begin, $1.value.end, $1.key) }) {
            guard e.begin == next else {
                throw fail(e.begin < next ? "tensor '\(key)' at data offsets [\(e.begin), \(e.end)] overlaps the tensor before it (which ends at \(next))"
                                          : "tensor '\(key)' starts at data offset \(e.begin), leaving a gap after the tensor before it (which ends at \(next))")
            }
            next = e.end
        }
        guard next == dataSize else { throw fail("its tensors end at data offset \(next) but the data section holds \(dataSize) bytes") }
        self.metadata = meta
        self.entries = entries
    }

    /// One header entry, checked: a known dtype, a shape of non-negative integers whose
    /// byte count fits in Int, offsets in range and spanning exactly that many bytes.
    private static func entry(_ key: String, _ value: Any, dataSize: Int, failWith: (String, String) -> SafeTensorsError) throws -> Entry {
        func fail(_ problem: String) -> SafeTensorsError { failWith(problem, "re-download or re-export it") }
        guard let info = value as? [String: Any] else { throw fail("header entry '\(key)' is not an object") }
        guard let dt = info["dtype"] as? String else { throw fail("tensor '\(key)' has no dtype string") }
        guard let dtype = SafeTensorsDType(rawValue: dt) else {
            throw failWith("tensor '\(key)' has dtype \(dt), which KoalaBooth cannot read (supported: F32, F16, BF16, F64, I64, I32)",
                           "convert it to one of those with safetensors in Python")
        }
        guard let shapeValues = info["shape"] as? [Any], let shape = integers(shapeValues) else {
            throw fail("tensor '\(key)' has a shape that is not a list of integers")
        }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw fail("tensor '\(key)' has a negative dimension in shape \(shape)") }
        guard let offsetValues = info["data_offsets"] as? [Any], let offsets = integers(offsetValues), offsets.count == 2 else {
            throw fail("tensor '\(key)' has data_offsets that are not two integers")
        }
        let (b, e) = (offsets[0], offsets[1])
        guard b >= 0, b <= e else { throw fail("tensor '\(key)' has data offsets [\(b), \(e)], which do not make a range") }
        guard e <= dataSize else {
            throw fail("it is truncated or corrupt (tensor '\(key)' has data offsets [\(b), \(e)], out of range of the \(dataSize)-byte data section)")
        }
        var expected = dtype.byteSize
        for d in shape {
            let (product, overflow) = expected.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("tensor '\(key)' of shape \(shape) would need more than \(Int.max) bytes") }
            expected = product
        }
        guard e - b == expected else {
            throw fail("tensor '\(key)' of shape \(shape) and dtype \(dt) needs \(expected) bytes but its offsets span \(e - b)")
        }
        return Entry(dtype: dtype, shape: shape, begin: b, end: e)
    }

    /// JSON numbers that are exact integers in Int range; nil for anything else (1.5,
    /// 1e30, "3", true).
    private static func integers(_ values: [Any]) -> [Int]? {
        var out: [Int] = []
        out.reserveCapacity(values.count)
        for v in values {
            // Bridging to Int succeeds only for an exact integer in range.
            guard let i = v as? Int else { return nil }
            out.append(i)
        }
        return out
    }

    /// Reads one tensor, converting to float32.
    public func tensor(_ key: String) throws -> Tensor {
        guard let e = entries[key] else {
            throw SafeTensorsError("\((path as NSString).lastPathComponent) has no tensor '\(key)'")
        }
        let t = Tensor(empty: e.shape)
        let n = t.count, dst = t.data
        let src = file.base + dataStart + e.begin
        switch e.dtype {
        case .F32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
        case .F16:
            Parallel.forEach(n, grain: 1 << 16) { r in
                for i in r { dst[i] = HalfPrecision.float(fromF16: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            }
        case .BF16:
            Parallel.forEach(n, grain: 1 << 16) { r in
                for i in r { dst[i] = HalfPrecision.float(fromBF16: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            }
        case .F64:
            for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        case .I64:
            for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
        case .I32:
            for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
        }
        file.release(from: dataStart + e.begin, to: dataStart + e.end)
        return t
    }
}

public enum SafeTensors {
    /// Writes tensors (sorted by name, 8-byte aligned header) to `path` atomically:
    /// a temporary file is renamed into place, so a crash never leaves half a file.
    public static func write(_ tensors: [String: Tensor], to path: String,
                             dtype: SafeTensorsDType = .F32, metadata: [String: String] = [:]) throws {
        boundaryCheck([.F32, .F16, .BF16].contains(dtype), "safetensors writer supports F32, F16, BF16")
        let names = tensors.keys.sorted()
        var header = "{"
        if !metadata.isEmpty {
            header += "\"__metadata__\":" + jsonObject(metadata.sorted { $0.key < $1.key }.map { ($0.key, jsonString($0.value)) })
        }
        var offset = 0
        for (i, name) in names.enumerated() {
            let t = tensors[name]!
            let size = t.count * dtype.byteSize
            if i > 0 || !metadata.isEmpty { header += "," }
            header += jsonString(name) + ":{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + size)]}"
            offset += size
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        let dir = (path as NSString).deletingLastPathComponent
        guard dir.isEmpty || FileManager.default.fileExists(atPath: dir) else {
            throw SafeTensorsError("cannot write \(path): directory \(dir) does not exist")
        }
        let tmp = path + ".tmp-\(getpid())"
        guard let fp = fopen(tmp, "wb") else {
            throw SafeTensorsError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        var ok = true
        var len = UInt64(headerBytes.count).littleEndian
        ok = ok && fwrite(&len, 8, 1, fp) == 1
        ok = ok && fwrite(headerBytes, 1, headerBytes.count, fp) == headerBytes.count
        for name in names where ok {
            let t = tensors[name]!.contiguous()
            let n = t.count
            switch dtype {
            case .F32:
                ok = fwrite(t.data, 4, n, fp) == n
            default:
                var buf = [UInt16](repeating: 0, count: n)
                let src = t.data
                for i in 0..<n { buf[i] = dtype == .F16 ? HalfPrecision.f16(from: src[i]) : HalfPrecision.bf16(from: src[i]) }
                ok = fwrite(buf, 2, n, fp) == n
            }
        }
        ok = (fclose(fp) == 0) && ok
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw SafeTensorsError("writing \(path) failed: \(String(cString: strerror(errno))) (disk full?)")
        }
    }

    private static func jsonString(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
        let arr = String(decoding: data, as: UTF8.self)
        return String(arr.dropFirst().dropLast())
    }

    private static func jsonObject(_ pairs: [(String, String)]) -> String {
        "{" + pairs.map { jsonString($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }
}
