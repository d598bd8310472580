import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// Points inside a multi-step change where tests can inject a failure, to check that
/// the change rolls back completely.
public enum StoreStep: Sendable, Equatable {
    /// After input `index` was copied into the staging area.
    case stagedFile(index: Int)
    /// Rows written and files moved into place; the transaction is still open.
    case beforeCommit
}

/// The data directory: a SQLite database (WAL, foreign keys on, versioned schema) and
/// the files it records, by paths relative to the directory so it can be moved.
///
/// Layout: `koalabooth.sqlite`, `subjects/<id>/photos/<sha256>.<ext>`,
/// `subjects/<id>/runs/<runId>/` (checkpoints), `subjects/<id>/generations/`, and
/// `tmp/` for staging. Changes that touch files and rows stage the files first, move
/// them into place inside the database transaction and undo the moves if it does not
/// commit: a crash can at worst leave unreferenced files (`doctor` reports them), never
/// rows pointing at missing files.
///
/// Several processes may use one directory at once (training in one, listing in
/// another): WAL lets readers run beside a writer, and writers wait for each other.
public final class SubjectStore: Sendable {
    /// The newest schema this code reads and writes (`PRAGMA user_version`).
    public static let schemaVersion = 2
    public static let databaseFileName = "koalabooth.sqlite"
    public static let defaultHomeName = ".koalabooth"
    /// Environment variable naming the data directory.
    public static let homeVariable = "KOALABOOTH_HOME"

    /// The data directory (absolute).
    public let home: URL
    /// The database, for queries the methods here do not cover.
    public let database: DatabasePool
    /// Opened read-only because the directory or database cannot be written: reads
    /// work, changes throw `StoreError.readOnly`.
    public let isReadOnly: Bool
    private let faultInjector: (@Sendable (StoreStep) throws -> Void)?

    public var databasePath: String { home.appendingPathComponent(Self.databaseFileName).path }

    /// The data directory: `option` (from `--home`) if given, else `$KOALABOOTH_HOME`,
    /// else `./.koalabooth`; relative paths start from the current directory.
    public static func resolveHome(_ option: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        let raw = option ?? environment[homeVariable].flatMap { $0.isEmpty ? nil : $0 } ?? defaultHomeName
        return URL(fileURLWithPath: (raw as NSString).expandingTildeInPath).standardizedFileURL
    }

    /// Whether `home` holds a database (without creating anything).
    public static func databaseExists(at home: URL) -> Bool {
        FileManager.default.fileExists(atPath: home.appendingPathComponent(databaseFileName).path)
    }

    /// Whether `home/subjects` holds files: then only its database can describe them,
    /// and opening without one is refused (`StoreError.databaseMissing`).
    public static func holdsSubjectFiles(at home: URL) -> Bool { storedSubjectFolders(home) > 0 }

    /// Opens the store in `home`, creating the directory and database if needed and
    /// bringing an older schema up to date; a directory or database that cannot be
    /// written is opened read-only (`isReadOnly`). Refuses to start a database where
    /// `subjects/` already holds files, and another program's SQLite file
    /// (`databaseMissing`, `notKoalaBoothDatabase`). Unless `removeLeftovers` is false,
    /// removes what killed processes left (`Leftovers`). `faultInjector` is for tests.
    public init(home: URL, removeLeftovers: Bool = true, faultInjector: (@Sendable (StoreStep) throws -> Void)? = nil) throws {
        self.home = home.standardizedFileURL
        self.faultInjector = faultInjector
        let path = self.home.appendingPathComponent(Self.databaseFileName).path
        let state = DatabaseFileState.inspect(path)
        try Self.checkDatabaseFile(state, path: path, home: self.home)
        let writable = try Self.prepareDirectory(self.home, databasePath: path, databaseExists: state != .missing)
        isReadOnly = !writable

        var config = Configuration()
        config.foreignKeysEnabled = true
        // Another process may hold the write lock for a moment (a training step's
        // progress update, an import); wait for it rather than fail.
        config.busyMode = .timeout(15)
        config.label = "KoalaStore"
        do {
            if writable {
                // Processes opening a directory together take turns: opening switches a new
                // database to WAL (an exclusive lock SQLite's busy timeout does not wait
                // for), GRDB reads the applied migrations outside the migration's
                // transaction, and a database another process is still creating looks
                // foreign until it is migrated and marked, so it is judged again in here.
                let home = self.home
                database = try Self.withLock(Self.lockPath(home)) {
                    let now = state == .marked ? state : DatabaseFileState.inspect(path)
                    try Self.checkDatabaseFile(now, path: path, home: home)
                    if now == .unmarked { try Self.checkUnmarked(path: path) }
                    let pool = try DatabasePool(path: path, configuration: config)
                    try Self.migrate(pool, path: path)
                    // The file's header may lag behind the WAL: ask SQLite before writing.
                    if now != .marked, try pool.read({ try Int64.fetchOne($0, sql: "PRAGMA application_id") }) != Int64(Self.applicationID) {
                        try pool.write { db in try db.execute(sql: "PRAGMA application_id = \(Self.applicationID)") }
                    }
                    return pool
                }
            } else {
                if state == .unmarked { try Self.checkUnmarked(path: path) }
                config.readonly = true
                database = try Self.readOnlyConnection(path: path, configuration: config) { try DatabasePool(path: $0, configuration: $1) }
                try Self.checkReadOnlySchema(database, home: self.home, path: path)
            }
        } catch let error as DatabaseError {
            throw Self.translate(error, home: self.home) ?? StoreError.databaseUnreadable(path: path, reason: error.message ?? error.description)
        }
        if writable && removeLeftovers { Leftovers.remove(in: self) }
    }

    func inject(_ step: StoreStep) throws { try faultInjector?(step) }

    /// `database.write`, refused on a read-only store, with a full disk reported as such.
    func write<T>(_ updates: (Database) throws -> T) throws -> T {
        if isReadOnly { throw StoreError.readOnly(path: home.path) }
        do {
            return try database.write(updates)
        } catch let error as DatabaseError {
            throw Self.translate(error, home: home) ?? error
        }
    }
}
