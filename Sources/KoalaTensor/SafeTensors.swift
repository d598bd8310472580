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

    init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw SafeTensorsError("cannot open \(path): \(String(cString: strerror(errno))); check that the file exists and is readable")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SafeTensorsError("cannot stat \(path)") }
        size = Int(st.st_size)
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

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.path = path
        self.file = file
        let name = (path as NSString).lastPathComponent
        guard file.size >= 8 else {
            throw SafeTensorsError("\(name) is truncated: \(file.size) bytes, too short for a safetensors header; re-download or re-export it")
        }
        let headerLen = Int(file.base.loadUnaligned(as: UInt64.self).littleEndian)
        guard headerLen <= file.size - 8 else {
            throw SafeTensorsError("\(name) is truncated: its header says \(headerLen) bytes but the file has \(file.size - 8) after the length; re-download or re-export it")
        }
        let headerData = Data(bytes: file.base + 8, count: headerLen)
        guard let json = try? JSONSerialization.jsonObject(with: headerData), let header = json as? [String: Any] else {
            throw SafeTensorsError("\(name) has a bad header: it is not a JSON object; the file is not safetensors or is corrupt")
        }
        dataStart = 8 + headerLen
        let dataSize = file.size - dataStart
        var meta: [String: String] = [:]
        var entries: [String: Entry] = [:]
        for (key, value) in header {
            if key == "__metadata__" {
                guard let m = value as? [String: Any] else { throw SafeTensorsError("\(name): __metadata__ is not an object") }
                for (k, v) in m { meta[k] = (v as? String) ?? "\(v)" }
                continue
            }
            guard let info = value as? [String: Any], let dt = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw SafeTensorsError("\(name): header entry '\(key)' lacks dtype, shape or data_offsets") }
            guard let dtype = SafeTensorsDType(rawValue: dt) else {
                throw SafeTensorsError("\(name): tensor '\(key)' has dtype \(dt), which KoalaBooth cannot read (supported: F32, F16, BF16, F64, I64, I32); convert it with safetensors in Python")
            }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw SafeTensorsError("\(name): tensor '\(key)' has a negative dimension in shape \(shape)") }
            let (b, e) = (offsets[0], offsets[1])
            guard b >= 0, b <= e, e <= dataSize else {
                throw SafeTensorsError("\(name): tensor '\(key)' has data offsets [\(b), \(e)] out of range (data section is \(dataSize) bytes); the file is truncated or corrupt")
            }
            let expected = shape.reduce(1, *) * dtype.byteSize
            guard e - b == expected else {
                throw SafeTensorsError("\(name): tensor '\(key)' of shape \(shape) and dtype \(dt) needs \(expected) bytes but its offsets span \(e - b)")
            }
            entries[key] = Entry(dtype: dtype, shape: shape, begin: b, end: e)
        }
        self.metadata = meta
        self.entries = entries
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
        precondition([.F32, .F16, .BF16].contains(dtype), "safetensors writer supports F32, F16, BF16")
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
