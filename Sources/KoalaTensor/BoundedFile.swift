import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reading files a user names (weights, latents, recipes, configs, tokenizer files)
/// with two guards: only regular files are opened (a FIFO would block forever,
/// `/dev/zero` would be read until the OOM killer ends the process), and no more than a
/// stated number of bytes is read before anything parses them.
///
/// KoalaImageIO has its own copy for photos (`RGBImage.readFile`): it sits below
/// KoalaTensor's users but does not depend on KoalaTensor, and a module for one
/// function would cost every other module a dependency edge.
public enum BoundedFile {
    /// What KoalaBooth reads of a JSON or text file (configs, model_index.json, a sharded
    /// index, tokenizer vocab/merges, a recipe): far above any real one (CLIP's
    /// tokenizer.json is 3.6 MB).
    public static let textLimit = 64 << 20

    public struct Error: Swift.Error, CustomStringConvertible, LocalizedError, Equatable {
        public let path: String
        /// The problem and the fix, without the path (for callers that name the file themselves).
        public let reason: String
        public var description: String { "\(path): \(reason)" }
        public var errorDescription: String? { reason }
    }

    /// Opens `path` read-only and returns the descriptor (the caller closes it) and the
    /// file's size, refusing anything but a regular file. O_NONBLOCK keeps the open of a
    /// FIFO from waiting for a writer; it does nothing to a regular file.
    public static func openRegular(_ path: String) throws -> (fd: Int32, size: Int) {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let reason = errno == ENOENT ? "there is no such file; check the path" : "it cannot be opened (\(String(cString: strerror(errno)))); check that the file exists and is readable"
            throw Error(path: path, reason: reason)
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw Error(path: path, reason: "it cannot be examined (fstat: \(String(cString: strerror(errno))))")
        }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG else {
            close(fd)
            throw Error(path: path, reason: "it is \(describe(kind)), not a regular file; give the path of a file on disk")
        }
        return (fd, Int(st.st_size))
    }

    /// The whole file, refused before reading when it is larger than `limit` bytes.
    public static func read(_ path: String, limit: Int) throws -> Data {
        let (fd, size) = try openRegular(path)
        defer { close(fd) }
        guard size <= limit else { throw tooLarge(path, size: size, limit: limit) }
        // Read to the end (the file may have grown since fstat), never past the limit.
        var data = Data(count: size + 1)
        var filled = 0
        while true {
            if filled == data.count {
                guard data.count <= limit else { throw tooLarge(path, size: data.count, limit: limit) }
                data.count += min(data.count, limit + 1 - data.count)
            }
            let n = data.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw Error(path: path, reason: "reading it failed (\(String(cString: strerror(errno))))") }
            if n == 0 { break }
            filled += n
        }
        data.count = filled
        return data
    }

    static func tooLarge(_ path: String, size: Int, limit: Int) -> Error {
        Error(path: path, reason: "it is \(size) bytes, more than the \(limit) bytes KoalaBooth reads from such a file; check that this is the right file")
    }

    static func describe(_ kind: mode_t) -> String {
        switch kind {
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO (named pipe)"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "a special file"
        }
    }
}
