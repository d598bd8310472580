import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Every write of `koalabooth train` that outlives the process goes through here:
/// checkpoint files, validation and class images (`file`), and store transactions
/// (`record`). That makes them the one place where a crash can land between two
/// durable states, and the one place the kill test (`TrainKillTests`) steps through.
///
/// A checkpoint step is a sequence of such writes — weights, optimizer state, resume
/// state (the on-disk commit mark, written last), then its store row, the retirement of
/// older checkpoints and the validation images with their rows — and `--resume` redoes
/// the tail of the step it resumes from, so each write must be safe to repeat: files are
/// replaced whole and rows are upserts keyed by path.
public enum DurableWrite {
    /// Writes `url` so that a crash or a full disk leaves either what was there before or
    /// the whole new file: `body` writes a hidden temporary path beside it (a file or a
    /// folder), which is flushed to disk (fsync), renamed over `url` (a folder there is
    /// removed first), and the parent folder flushed so the rename itself is durable.
    /// On failure the temporary is removed and the error rethrown.
    public static func file(_ url: URL, _ body: (URL) throws -> Void) throws {
        try faultPoint(url.lastPathComponent)
        let fm = FileManager.default
        let parent = url.deletingLastPathComponent()
        let tmp = parent.appendingPathComponent(".\(url.lastPathComponent)\(partialMarker)\(getpid())")
        try? fm.removeItem(at: tmp)
        do {
            try body(tmp)
            try flush(tmp)
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue { try fm.removeItem(at: url) }
            guard rename(tmp.path, url.path) == 0 else { throw TrainingError("cannot move \(tmp.path) to \(url.path): \(String(cString: strerror(errno)))") }
            try sync(parent)
        } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
    }

    /// Runs `body`, one store transaction (SQLite makes it durable), as a durable write.
    @discardableResult
    public static func record<T>(_ what: String, _ body: () throws -> T) throws -> T {
        try faultPoint(what)
        return try body()
    }

    /// Removes the temporaries of writes a killed process left in `directory` (not in
    /// its subfolders).
    public static func removeLeftovers(in directory: URL) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix(".") && name.contains(partialMarker) {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    /// Removes the temporaries that killed writes of `url` itself left beside it.
    public static func removeLeftovers(of url: URL) {
        let parent = url.deletingLastPathComponent(), prefix = ".\(url.lastPathComponent)\(partialMarker)"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        for name in names where name.hasPrefix(prefix) { try? FileManager.default.removeItem(at: parent.appendingPathComponent(name)) }
    }

    static let partialMarker = ".partial-"

    /// fsyncs `url` and, when it is a folder (a temporary being written), everything in it.
    static func flush(_ url: URL) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue {
            for name in try FileManager.default.contentsOfDirectory(atPath: url.path) { try flush(url.appendingPathComponent(name)) }
        }
        try sync(url)
    }

    /// fsyncs `url` alone: for the folder a rename happened in, whose other entries (other
    /// processes' temporaries among them) are not this write's.
    static func sync(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TrainingError("cannot open \(url.path) to flush it: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else {
            throw TrainingError("writing \(url.path) to disk failed: \(String(cString: strerror(errno))) (disk full?)")
        }
    }

    // MARK: Test hook

    /// Fault injection for tests (`TrainKillTests`), read once from the environment:
    /// `KOALABOOTH_FAULT_KILL_AT_WRITE=N` makes the process SIGKILL itself right before
    /// its Nth durable write, as `kill -9` or a power cut at that moment would stop it;
    /// `KOALABOOTH_FAULT_FAIL_AT_WRITE=N` makes that write fail as on a full disk. N is a
    /// count from 1 or the write's name as printed; with either variable set (0: no
    /// fault), each write first prints `fault point N: <name>` to stderr, so a test can
    /// list them. Unset, as outside tests, this costs one comparison per write.
    private static let fault: (kill: String, fail: String)? = {
        let env = ProcessInfo.processInfo.environment
        let kill = env["KOALABOOTH_FAULT_KILL_AT_WRITE"], fail = env["KOALABOOTH_FAULT_FAIL_AT_WRITE"]
        return kill == nil && fail == nil ? nil : (kill ?? "", fail ?? "")
    }()
    nonisolated(unsafe) private static var writes = 0

    private static func faultPoint(_ what: String) throws {
        guard let fault else { return }
        writes += 1
        FileHandle.standardError.write(Data("fault point \(writes): \(what)\n".utf8))
        func hit(_ spec: String) -> Bool { spec == "\(writes)" || spec == what }
        if hit(fault.kill) { kill(getpid(), SIGKILL) }
        if hit(fault.fail) { throw TrainingError("writing \(what) failed: No space left on device (KOALABOOTH_FAULT_FAIL_AT_WRITE)") }
    }
}
