import Foundation

/// How much memory this process may still use, for refusing requests that cannot fit
/// before they start (an allocation that fails later aborts the process instead of
/// giving the user a message).
public enum SystemMemory {
    /// Bytes still available: the kernel's `MemAvailable` (/proc/meminfo), lowered to the
    /// room left under the cgroup's limit (v2 `memory.max` − `memory.current`, or v1
    /// `memory.limit_in_bytes` − `memory.usage_in_bytes`) where one is set, as in a
    /// container. nil where neither can be read (not Linux).
    public static func availableBytes() -> UInt64? {
        var best: UInt64?
        if let meminfo = read("/proc/meminfo"),
           let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }) {
            // "MemAvailable:   20123456 kB"
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, let kb = UInt64(fields[1]) { best = kb.multipliedReportingOverflow(by: 1024).partialValue }
        }
        if let room = cgroupRoom() { best = min(best ?? room, room) }
        return best
    }

    /// Room left under the cgroup memory limit, nil when there is no limit.
    static func cgroupRoom() -> UInt64? {
        let pairs = [("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                     ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")]
        for (limitPath, usagePath) in pairs {
            guard let limitText = read(limitPath)?.trimmingCharacters(in: .whitespacesAndNewlines) else { continue }
            // "max" (v2) or a huge page-rounded number (v1) mean no limit.
            guard let limit = UInt64(limitText), limit < (1 << 60) else { return nil }
            let usage = read(usagePath).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            return limit > usage ? limit - usage : 0
        }
        return nil
    }

    /// A small /proc or /sys file. These report size 0, so read until end of file.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let got = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
            guard got > 0 else { break }
            bytes.append(contentsOf: buffer[0..<got])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
