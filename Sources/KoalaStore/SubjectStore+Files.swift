import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Paths inside the data directory, and the file operations behind its all-or-nothing changes.

extension SubjectStore {
    /// The absolute location of a path recorded in the database.
    public func url(forRelativePath path: String) -> URL { home.appendingPathComponent(path) }

    /// The path to record for a file inside the data directory.
    public func relativePath(of url: URL) throws -> String {
        let base = home.path.hasSuffix("/") ? home.path : home.path + "/"
        let full = url.standardizedFileURL.path
        guard full.hasPrefix(base) else { throw StoreError.outsideHome(path: full, home: home.path) }
        return String(full.dropFirst(base.count))
    }

    public func subjectDirectory(subjectID: Int64) -> URL { home.appendingPathComponent("subjects/\(subjectID)") }
    /// Where a run writes its checkpoints and logs.
    public func runDirectory(subjectID: Int64, runID: Int64) -> URL { subjectDirectory(subjectID: subjectID).appendingPathComponent("runs/\(runID)") }
    /// Where generated images of a subject go.
    public func generationDirectory(subjectID: Int64) -> URL { subjectDirectory(subjectID: subjectID).appendingPathComponent("generations") }
    var temporaryDirectory: URL { home.appendingPathComponent("tmp") }

    func undoMoves(_ moved: [URL]) {
        for url in moved.reversed() { try? FileManager.default.removeItem(at: url) }
    }

    /// `tmp/<prefix>-<pid>-<uuid>`: the pid tells a later start whether the process
    /// that made it has ended (`Leftovers`).
    func makeTemporaryDirectory(_ prefix: String) throws -> URL {
        if isReadOnly { throw StoreError.readOnly(path: home.path) }
        let dir = temporaryDirectory.appendingPathComponent("\(prefix)-\(getpid())-\(UUID().uuidString)")
        try makeDirectory(dir)
        return dir
    }

    func makeDirectory(_ dir: URL) throws {
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw Self.translate(fileError: error, home: home)
                ?? StoreError.fileOperationFailed(path: dir.path, reason: "cannot create the directory: \(error.localizedDescription)")
        }
    }

    /// rename(2): atomic, and replaces a stale file of the same name left by a crash.
    func move(_ from: URL, to: URL) throws {
        if rename(from.path, to.path) != 0 {
            throw StoreError.fileOperationFailed(path: from.path, reason: "cannot move it to \(to.path): \(String(cString: strerror(errno)))")
        }
    }
}
