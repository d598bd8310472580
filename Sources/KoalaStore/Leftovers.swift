import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// What killed processes leave in the data directory, and how a later start removes it
/// without touching the work of a process still running. Every temporary name written
/// there carries its writer's pid:
///
/// - `tmp/stage-<pid>-<uuid>/`: photos being imported;
/// - `tmp/trash-<pid>-<uuid>/`: files a delete moved aside until it commits, each named
///   by its percent-encoded original path (`parkedName`);
/// - `.dat.nosync<hex pid>.<random>`: Foundation's atomic writes (resume state JSON, PNGs);
/// - `<file>.tmp-<pid>`: `SafeTensors.write`; `.<folder>.partial-<pid>/`: a full
///   fine-tune's checkpoint folder being written;
/// - `.write-probe-<pid>`: the store's writability probe.
///
/// An entry is abandoned when its writer has ended, or when its pid now belongs to a
/// process that started after the entry last changed (a reused pid).
enum Leftovers {
    static let probePrefix = ".write-probe-"

    /// The pid in a temporary name, or nil when `name` is not one.
    static func writerPID(_ name: String) -> Int32? {
        func decimal(_ s: Substring) -> Int32? { s.allSatisfy(\.isASCII) ? Int32(s) : nil }
        if name.hasPrefix(".dat.nosync") {
            let rest = name.dropFirst(".dat.nosync".count)
            return rest.split(separator: ".", maxSplits: 1).first.flatMap { Int32($0, radix: 16) }
        }
        if name.hasPrefix(probePrefix) { return decimal(name.dropFirst(probePrefix.count)) }
        for prefix in ["stage-", "trash-"] where name.hasPrefix(prefix) {
            return name.dropFirst(prefix.count).split(separator: "-", maxSplits: 1).first.flatMap(decimal)
        }
        if let r = name.range(of: ".tmp-", options: .backwards) { return decimal(name[r.upperBound...]) }
        if name.hasPrefix("."), let r = name.range(of: ".partial-", options: .backwards) { return decimal(name[r.upperBound...]) }
        return nil
    }

    /// Whether the writer `pid` of an entry last changed at `modified` can no longer be
    /// working on it. Start times are known to about a second, hence the margin.
    static func isAbandoned(pid: Int32, modified: Date) -> Bool {
        if pid == getpid() || pid <= 0 { return false }
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        guard let started = processStart(pid) else { return false }
        return started > modified.addingTimeInterval(2)
    }

    /// When process `pid` started (field 22 of /proc/<pid>/stat, in clock ticks after boot).
    static func processStart(_ pid: Int32) -> Date? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let ticks = Double(fields[19]),
              let machine = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = machine.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(line.dropFirst("btime ".count)) else { return nil }
        return Date(timeIntervalSince1970: boot + ticks / Double(sysconf(Int32(_SC_CLK_TCK))))
    }

    /// The name under which a delete parks the file or folder at `relativePath`.
    static func parkedName(_ relativePath: String) -> String {
        relativePath.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "/%").inverted) ?? relativePath
    }

    /// The relative path a parked entry came from, or nil for other names.
    static func originalPath(ofParked name: String) -> String? {
        guard name.contains("%2F"), let path = name.removingPercentEncoding, path.hasPrefix("subjects/") else { return nil }
        return path
    }

    /// A leftover: `relativePath` in the data directory.
    struct Entry: Equatable {
        var relativePath: String
        var isTrash: Bool { relativePath.hasPrefix("tmp/trash-") }
    }

    /// The abandoned temporary entries of the data directory, and (`unjudged`) those of
    /// `tmp/` without a pid, left by KoalaBooth versions that did not name one.
    static func find(in store: SubjectStore) -> (abandoned: [Entry], unjudged: [Entry]) {
        var abandoned: [Entry] = [], unjudged: [Entry] = []
        func visit(_ relative: String, name: String, pidRequired: Bool) -> Bool {
            guard let pid = writerPID(name) else {
                if !pidRequired { unjudged.append(Entry(relativePath: relative)) }
                return false
            }
            if isAbandoned(pid: pid, modified: modificationDate(store.url(forRelativePath: relative).path)) {
                abandoned.append(Entry(relativePath: relative))
            }
            return true
        }
        for name in entries(store.home.path) where name.hasPrefix(probePrefix) { _ = visit(name, name: name, pidRequired: true) }
        for name in entries(store.temporaryDirectory.path) { _ = visit("tmp/\(name)", name: name, pidRequired: false) }
        func walk(_ relative: String) {
            for name in entries(store.url(forRelativePath: relative).path) {
                let child = "\(relative)/\(name)"
                if visit(child, name: name, pidRequired: true) { continue }
                if isDirectory(store.url(forRelativePath: child).path) { walk(child) }
            }
        }
        walk("subjects")
        return (abandoned, unjudged)
    }

    /// Removes every abandoned entry. A trash folder's entries are put back where the
    /// store still records them (the delete did not commit) and removed otherwise;
    /// entries whose origin is unknown stay for `doctor` to report.
    static func remove(in store: SubjectStore) {
        let fm = FileManager.default
        for entry in find(in: store).abandoned {
            let url = store.url(forRelativePath: entry.relativePath)
            guard entry.isTrash else {
                try? fm.removeItem(at: url)
                continue
            }
            for name in entries(url.path) {
                guard let original = originalPath(ofParked: name) else { continue }
                let parked = url.appendingPathComponent(name)
                if (try? store.stillRecords(original)) == true {
                    let target = store.url(forRelativePath: original)
                    if !fm.fileExists(atPath: target.path) {
                        try? fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
                        try? store.move(parked, to: target)
                    }
                } else {
                    try? fm.removeItem(at: parked)
                }
            }
            rmdir(url.path)  // only when nothing is left in it
        }
    }

    static func entries(_ path: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }

    static func isDirectory(_ path: String) -> Bool {
        var s = stat()
        return lstat(path, &s) == 0 && (s.st_mode & S_IFMT) == S_IFDIR
    }

    static func modificationDate(_ path: String) -> Date {
        var s = stat()
        guard lstat(path, &s) == 0 else { return .distantPast }
        return Date(timeIntervalSince1970: Double(s.st_mtim.tv_sec) + Double(s.st_mtim.tv_nsec) / 1e9)
    }
}

extension SubjectStore {
    /// Whether a row still refers to `relativePath` or to something inside it (a
    /// subject's folder while its row exists).
    func stillRecords(_ relativePath: String) throws -> Bool {
        let parts = relativePath.split(separator: "/")
        if parts.count == 2, parts[0] == "subjects", let id = Int64(parts[1]), try subject(id: id) != nil { return true }
        return try database.read { db in
            try Bool.fetchOne(db, sql: """
                SELECT EXISTS (SELECT 1 FROM photo WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/')
                    OR EXISTS (SELECT 1 FROM checkpoint WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/')
                    OR EXISTS (SELECT 1 FROM generation WHERE imagePath = ?1 OR substr(imagePath, 1, length(?1) + 1) = ?1 || '/')
                """, arguments: [relativePath]) ?? true
        }
    }
}
