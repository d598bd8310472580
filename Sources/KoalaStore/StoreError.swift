import Foundation

/// Why a store operation failed. Each description states the problem and what to do,
/// so the CLI prints it as is. A failed operation leaves the database and the files
/// as they were.
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
            return "data directory \(path) is a file, not a directory. Point --home (or KOALABOOTH_HOME) at a directory."
        case .homeNotWritable(let path, let reason):
            return "data directory \(path) is not writable (\(reason)). Use a writable location with --home or KOALABOOTH_HOME, or fix its permissions."
        case .databaseTooNew(let path, let version, let supported):
            return "\(path) was written by a newer KoalaBooth (database schema \(version); this version understands up to \(supported)). Upgrade KoalaBooth, or use another data directory with --home."
        case .databaseUnreadable(let path, let reason):
            return "\(path) cannot be opened as a KoalaBooth database (\(reason)). Run `koalabooth doctor`; if the file is damaged, restore it from a backup or move the data directory aside."
        case .databaseMissing(let path, let empty, let n):
            let home = (path as NSString).deletingLastPathComponent
            return "\(path) is \(empty ? "empty (0 bytes)" : "missing"), but \(home)/subjects holds the files of \(n) subject\(n == 1 ? "" : "s"): KoalaBooth will not start a new database over them. Restore \(path) from a backup (with its -wal file, if there is one), or point --home / KOALABOOTH_HOME at another directory to start afresh."
        case .notKoalaBoothDatabase(let path, let reason):
            return "\(path) is not a KoalaBooth database (\(reason)); it was left unchanged. If it should be KoalaBooth's, restore it from a backup; otherwise point --home / KOALABOOTH_HOME at a KoalaBooth data directory or a new one."
        case .diskFull(let path, let available):
            let left = available.map { " (\(Self.bytes($0)) free)" } ?? ""
            return "the disk holding the data directory \(path) is full\(left), so the change could not be saved; nothing was changed. Free some space on it (`df -h \(path)` shows the disk; `koalabooth doctor` lists leftover files, and `checkpoint.keep_last` in a recipe limits how many checkpoints a run keeps), then run the command again."
        case .readOnly(let path):
            return "the data directory \(path) is read-only, so this command cannot change it (`subject list`, `subject show`, `runs list` and `doctor` still work). Make it writable, or copy it to a writable place and point --home / KOALABOOTH_HOME there."
        case .unknownSubject(let name):
            return "no subject named \(name); `koalabooth subject list` shows the names."
        case .duplicateName(let name):
            return "a subject named \(name) already exists (names are compared ignoring case). Choose another name, or `koalabooth subject add-photos \(name) ...` to add to it."
        case .invalidName(let name, let reason):
            return "invalid subject name '\(name)': \(reason). Use 1-64 letters, digits, '-' and '_', starting with a letter or digit."
        case .invalidToken(let token, let reason):
            return "invalid identifier token '\(token)': \(reason). Use one short word of letters and digits, such as the default 'sks'."
        case .invalidClassNoun(let classNoun, let reason):
            return "invalid class noun '\(classNoun)': \(reason). Use what the subject is, in a word or two (for example --class dog)."
        case .unknownRun(let id):
            return "no training run with id \(id); `koalabooth runs list` shows the runs."
        case .photoNotFound(let subject, let query):
            return "subject \(subject) has no photo matching '\(query)'; `koalabooth subject show \(subject)` lists its photos with their hashes and file names."
        case .ambiguousPhoto(let subject, let query, let matches):
            return "'\(query)' matches \(matches.count) photos of \(subject) (\(matches.joined(separator: ", "))). Give more characters of the hash."
        case .fileUnreadable(let path, let reason):
            return "\(path): cannot be read (\(reason)). Check the path and its permissions."
        case .fileOperationFailed(let path, let reason):
            return "\(path): \(reason). Check free disk space and permissions of the data directory; nothing was changed."
        case .outsideHome(let path, let home):
            return "\(path) is outside the data directory \(home); the store only records files inside it."
        case .subjectBusy(let name, let attempted, let pid, let runID):
            let who = (runID.map { "run \($0)" } ?? "a training run") + (pid > 0 ? " (process \(pid))" : "")
            let stop = pid > 0 ? "press Ctrl-C in its terminal or run `kill -INT \(pid)`" : "press Ctrl-C in its terminal"
            return "cannot \(attempted) \(name): it is being trained by \(who). Wait for the run to finish, or stop it (\(stop); it saves a checkpoint, and `koalabooth train \(name) --resume` continues it later)."
        }
    }

    public var errorDescription: String? { description }

    static func bytes(_ n: Int64) -> String {
        n >= 1 << 30 ? String(format: "%.1f GB", Double(n) / Double(1 << 30))
            : n >= 1 << 20 ? String(format: "%.1f MB", Double(n) / Double(1 << 20)) : "\(n / 1024) KB"
    }
}
