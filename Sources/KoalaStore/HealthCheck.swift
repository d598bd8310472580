import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

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
    /// Files under `subjects/` that no row records and that are not part of a recorded
    /// subject's or run's layout (`DataLayout`): nothing uses them.
    public var orphans: [String]
    /// Temporary files and folders of processes that ended (`Leftovers`), and entries of
    /// `tmp/` older versions left: the next command other than `doctor` cleans them up,
    /// putting back what an unfinished delete had moved aside.
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
        let (version, integrity, violations, recorded, layout) = try database.read { db in
            let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            let violations = try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count
            var recorded: [Recorded] = []
            for p in try Photo.fetchAll(db) { recorded.append(.init(kind: "photo", path: p.path, size: p.byteCount, sha256: p.sha256)) }
            for c in try Checkpoint.fetchAll(db) { recorded.append(.init(kind: "checkpoint", path: c.path, size: c.byteCount, sha256: c.sha256)) }
            for g in try Generation.fetchAll(db) { recorded.append(.init(kind: "generation", path: g.imagePath, size: nil, sha256: nil)) }
            return (version, integrity, violations, recorded, try DataLayout(db))
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
        let orphans = files(under: "subjects").filter { !known.contains($0) && !layout.isWritten($0) }
        let found = Leftovers.find(in: self)
        let leftovers = (found.abandoned + found.unjudged).map(\.relativePath).sorted()
        return HealthReport(home: home.path, schemaVersion: version, integrity: integrity, foreignKeyViolations: violations,
                            filesChecked: recorded.count, fileProblems: problems, orphans: orphans, leftovers: leftovers)
    }

    /// Regular files below `relative`, as paths relative to the data directory, without
    /// temporary entries (`Leftovers` judges those).
    private func files(under relative: String) -> [String] {
        var out: [String] = []
        func walk(_ rel: String) {
            for name in Leftovers.entries(url(forRelativePath: rel).path) where Leftovers.writerPID(name) == nil {
                let child = "\(rel)/\(name)"
                var s = stat()
                guard lstat(url(forRelativePath: child).path, &s) == 0 else { continue }
                switch s.st_mode & S_IFMT {
                case S_IFDIR: walk(child)
                case S_IFREG: out.append(child)
                default: continue
                }
            }
        }
        walk(relative)
        return out.sorted()
    }
}

/// The files the program writes under `subjects/` without a row of their own, known by
/// where they are and tied to the rows they belong to:
///
/// - `subjects/<id>/runs/<run>/<name>-stepNNNNNN[.ext…]` and the files directly inside a
///   `<name>-stepNNNNNN/` folder: a checkpoint's files (LoRA, kohya LoRA, optimizer and
///   resume state, a full fine-tune's `unet-stepNNNNNN/`), the same entries
///   `checkpoint.keep_last` retires together; resume needs them.
/// - `subjects/<id>/runs/<run>/validation/stepNNNNNN-pP-I.png`: validation images (each
///   recorded as a generation once drawn; a resumed run redraws a missing record).
/// - `subjects/<id>/class-images/<key>/class-NNNNN.png`: prior preservation's cache.
///
/// The subject, and for run files the run of that subject, must be recorded.
struct DataLayout {
    let subjects: Set<Int64>
    /// Run id to its subject's id.
    let runs: [Int64: Int64]

    init(_ db: Database) throws {
        subjects = Set(try Int64.fetchAll(db, sql: "SELECT id FROM subject"))
        runs = Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT id, subjectId FROM trainingRun").map { ($0[0] as Int64, $0[1] as Int64) })
    }

    /// Whether `path` (relative to the data directory) is such a file.
    func isWritten(_ path: String) -> Bool {
        let p = path.split(separator: "/", omittingEmptySubsequences: false)
        guard p.count >= 4, p[0] == "subjects", let subject = Int64(p[1]), subjects.contains(subject) else { return false }
        switch p[2] {
        case "runs":
            guard let run = Int64(p[3]), runs[run] == subject, p.count >= 5 else { return false }
            switch p.count {
            case 5: return Self.isCheckpointEntry(p[4])
            case 6: return p[4] == "validation" ? Self.matches(p[5], "step#-p#-#.png") : Self.isCheckpointEntry(p[4]) && !p[4].contains(".")
            default: return false
            }
        case "class-images":
            return p.count == 5 && !p[3].isEmpty && p[3].allSatisfy(\.isHexDigit) && Self.matches(p[4], "class-#.png")
        default:
            return false
        }
    }

    /// `<name>-stepNNNNNN` optionally followed by `.extensions`, as `CheckpointRetention`
    /// groups a checkpoint's entries.
    static func isCheckpointEntry(_ name: Substring) -> Bool {
        guard let r = name.range(of: "-step"), r.lowerBound > name.startIndex else { return false }
        let rest = name[r.upperBound...]
        let digits = rest.prefix(while: \.isASCIIDigit)
        guard !digits.isEmpty else { return false }
        let tail = rest.dropFirst(digits.count)
        return tail.isEmpty || (tail.hasPrefix(".") && tail.count > 1)
    }

    /// `name` against `pattern`, where `#` stands for one or more ASCII digits.
    static func matches(_ name: Substring, _ pattern: String) -> Bool {
        var n = name[...], p = pattern[...]
        while let c = p.first {
            p = p.dropFirst()
            if c == "#" {
                let digits = n.prefix(while: \.isASCIIDigit)
                if digits.isEmpty { return false }
                n = n.dropFirst(digits.count)
            } else {
                guard n.first == c else { return false }
                n = n.dropFirst()
            }
        }
        return n.isEmpty
    }
}

private extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
