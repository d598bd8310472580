import Foundation

/// Why a store operation failed. Each description states the problem and what to do in
/// the store's terms; a program words the fix with its own flags and commands (the CLI:
/// `ErrorWording`). A failed operation leaves the database and the files as they were.
public enum StoreError: Error, Equatable, CustomStringConvertible, LocalizedError {
    case homeNotADirectory(path: String)
    case homeNotWritable(path: String, reason: String)
    case databaseTooNew(path: String, version: Int, supported: Int)
    case databaseUnreadable(path: String, reason: String)
    /// The database file is missing or empty (`empty`) while `subjects/` holds the files
    /// of `subjectFolders` subjects: making a new database would hide them.
    case databaseMissing(path: String, empty: Bool, subjectFolders: Int)
    /// A SQLite database of another program.
    case notKoalaBoothDatabase(path: String, reason: String)
    /// The disk holding the data directory `path` is full (`available` bytes left, when known).
    case diskFull(path: String, available: Int64?)
    /// The data directory (or its database) cannot be written: reading commands work,
    /// this one does not.
    case readOnly(path: String)
    case unknownSubject(name: String)
    case duplicateName(name: String)
    case invalidName(name: String, reason: String)
    case invalidToken(token: String, reason: String)
    case invalidClassNoun(classNoun: String, reason: String)
    case unknownRun(id: Int64)
    case photoNotFound(subject: String, query: String)
    case ambiguousPhoto(subject: String, query: String, matches: [String])
    case fileUnreadable(path: String, reason: String)
    case fileOperationFailed(path: String, reason: String)
    case outsideHome(path: String, home: String)
    /// Another process trains the subject (`TrainingLock`); `attempted` is what was refused.
    case subjectBusy(name: String, attempted: String, pid: Int32, runID: Int64?)

    public var description: String {
        switch self {
        case .homeNotADirectory(let path):
            return "data directory \(path) is a file, not a directory. Use a directory as the data directory."
        case .homeNotWritable(let path, let reason):
            return "data directory \(path) is not writable (\(reason)). Use a writable location as the data directory, or fix its permissions."
        case .databaseTooNew(let path, let version, let supported):
            return "\(path) was written by a newer KoalaBooth (database schema \(version); this version understands up to \(supported)). Upgrade KoalaBooth, or use another data directory."
        case .databaseUnreadable(let path, let reason):
            return "\(path) cannot be opened as a KoalaBooth database (\(reason)). Check the data directory; if the file is damaged, restore it from a backup or move the data directory aside."
        case .databaseMissing(let path, let empty, let n):
            let home = (path as NSString).deletingLastPathComponent
            return "\(path) is \(empty ? "empty (0 bytes)" : "missing"), but \(home)/subjects holds the files of \(n) subject\(n == 1 ? "" : "s"): KoalaBooth will not start a new database over them. Restore \(path) from a backup (with its -wal file, if there is one), or use another data directory to start afresh."
        case .notKoalaBoothDatabase(let path, let reason):
            return "\(path) is not a KoalaBooth database (\(reason)); it was left unchanged. If it should be KoalaBooth's, restore it from a backup; otherwise use a KoalaBooth data directory or a new one."
        case .diskFull(let path, let available):
            return "the disk holding the data directory \(path) is full\(Self.free(available)), so the change could not be saved; nothing was changed. Free some space on it (`df -h \(path)` shows the disk; leftover files and old checkpoints in the data directory are candidates), then try again."
        case .readOnly(let path):
            return "the data directory \(path) is read-only, so it cannot be changed (reading it still works). Make it writable, or copy it to a writable place and use the copy."
        case .unknownSubject(let name):
            return "no subject named \(name)."
        case .duplicateName(let name):
            return "a subject named \(name) already exists (names are compared ignoring case). Choose another name, or add the photos to \(name)."
        case .invalidName(let name, let reason):
            return "invalid subject name '\(name)': \(reason). Use 1-64 letters, digits, '-' and '_', starting with a letter or digit."
        case .invalidToken(let token, let reason):
            return "invalid identifier token '\(token)': \(reason). Use one short word of letters and digits, such as the default 'sks'."
        case .invalidClassNoun(let classNoun, let reason):
            return "invalid class noun '\(classNoun)': \(reason). Use what the subject is, in a word or two (for example dog)."
        case .unknownRun(let id):
            return "no training run with id \(id)."
        case .photoNotFound(let subject, let query):
            return "subject \(subject) has no photo matching '\(query)'; its photos are named by their hashes and file names."
        case .ambiguousPhoto(let subject, let query, let matches):
            return "'\(query)' matches \(matches.count) photos of \(subject) (\(matches.joined(separator: ", "))). Give more characters of the hash."
        case .fileUnreadable(let path, let reason):
            return "\(path): cannot be read (\(reason)). Check the path and its permissions."
        case .fileOperationFailed(let path, let reason):
            return "\(path): \(reason). Check free disk space and permissions of the data directory; nothing was changed."
        case .outsideHome(let path, let home):
            return "\(path) is outside the data directory \(home); the store only records files inside it."
        case .subjectBusy(let name, let attempted, let pid, let runID):
            return "cannot \(attempted) \(name): it is being trained by \(Self.trainer(pid: pid, runID: runID)). Wait for the run to finish, or stop it (\(Self.stop(pid: pid)); it saves a checkpoint, and the run can be resumed later)."
        }
    }

    /// " (1.2 GB free)", or nothing when the free space is not known.
    public static func free(_ available: Int64?) -> String { available.map { " (\(bytes($0)) free)" } ?? "" }

    /// "run 3 (process 123)": who holds a subject's training lock.
    public static func trainer(pid: Int32, runID: Int64?) -> String {
        (runID.map { "run \($0)" } ?? "a training run") + (pid > 0 ? " (process \(pid))" : "")
    }

    /// How to interrupt the training process `pid` so that it saves a checkpoint.
    public static func stop(pid: Int32) -> String {
        pid > 0 ? "press Ctrl-C in its terminal or run `kill -INT \(pid)`" : "press Ctrl-C in its terminal"
    }

    public var errorDescription: String? { description }

    static func bytes(_ n: Int64) -> String {
        n >= 1 << 30 ? String(format: "%.1f GB", Double(n) / Double(1 << 30))
            : n >= 1 << 20 ? String(format: "%.1f MB", Double(n) / Double(1 << 20)) : "\(n / 1024) KB"
    }
}
