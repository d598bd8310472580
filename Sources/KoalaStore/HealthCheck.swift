import Foundation
import GRDB

/// What `SubjectStore.checkHealth` found.
public struct HealthReport: Codable, Sendable, Equatable {
    /// A recorded file that is missing, or whose size or hash differs from the record.
    public struct FileProblem: Codable, Sendable, Equatable {
        public var kind: String
        public var path: String
        public var problem: String
    }

    public var home: String
    public var schemaVersion: Int
    /// `PRAGMA integrity_check` lines ("ok" when sound).
    public var integrity: [String]
    public var foreignKeyViolations: Int
    public var filesChecked: Int
    public var fileProblems: [FileProblem]
    /// Files under `subjects/` that no row records.
    public var orphans: [String]
    /// Leftovers in `tmp/` from interrupted operations (safe to delete).
    public var leftovers: [String]

    public var isHealthy: Bool {
        integrity == ["ok"] && foreignKeyViolations == 0 && fileProblems.isEmpty && orphans.isEmpty
    }
}

extension SubjectStore {
    /// Checks database integrity and that every recorded file exists with its recorded
    /// size (and hash, if `verifyHashes`), and lists unrecorded files.
    public func checkHealth(verifyHashes: Bool = false) throws -> HealthReport {
        struct Recorded { var kind: String; var path: String; var size: Int?; var sha256: String? }
        let (version, integrity, violations, recorded) = try database.read { db in
            let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            let violations = try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count
            var recorded: [Recorded] = []
            for p in try Photo.fetchAll(db) { recorded.append(.init(kind: "photo", path: p.path, size: p.byteCount, sha256: p.sha256)) }
            for c in try Checkpoint.fetchAll(db) { recorded.append(.init(kind: "checkpoint", path: c.path, size: c.byteCount, sha256: c.sha256)) }
            for g in try Generation.fetchAll(db) { recorded.append(.init(kind: "generation", path: g.imagePath, size: nil, sha256: nil)) }
            return (version, integrity, violations, recorded)
        }
        var problems: [HealthReport.FileProblem] = []
        for r in recorded {
            let path = url(forRelativePath: r.path).path
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
                problems.append(.init(kind: r.kind, path: r.path, problem: "missing"))
                continue
            }
            let size = (attributes[.size] as? NSNumber)?.intValue ?? -1
            if let expected = r.size, size != expected {
                problems.append(.init(kind: r.kind, path: r.path, problem: "size \(size) bytes, recorded \(expected)"))
            } else if verifyHashes, let expected = r.sha256, (try? SHA256.hexOfFile(atPath: path).hex) != expected {
                problems.append(.init(kind: r.kind, path: r.path, problem: "contents changed (SHA-256 differs from the record)"))
            }
        }
        let known = Set(recorded.map(\.path))
        let orphans = files(under: "subjects").filter { !known.contains($0) }
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: temporaryDirectory.path))?.sorted().map { "tmp/\($0)" } ?? []
        return HealthReport(home: home.path, schemaVersion: version, integrity: integrity, foreignKeyViolations: violations,
                            filesChecked: recorded.count, fileProblems: problems, orphans: orphans, leftovers: leftovers)
    }

    /// Regular files below `relative`, as paths relative to the data directory.
    private func files(under relative: String) -> [String] {
        let root = url(forRelativePath: relative)
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var out: [String] = []
        for case let file as URL in walker where (try? file.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            if let rel = try? relativePath(of: file) { out.append(rel) }
        }
        return out.sorted()
    }
}
