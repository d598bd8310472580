import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// What the file at a data directory's database path holds, judged from its 100-byte
/// header before SQLite touches it: opening a database read-write switches it to WAL,
/// which would change another program's file.
enum DatabaseFileState: Equatable {
    case missing
    /// Zero bytes (SQLite would take it for a new database).
    case empty
    /// A SQLite database with KoalaBooth's application id.
    case marked
    /// A SQLite database without an application id: new, made by a KoalaBooth from
    /// before the id, or another program's (`SubjectStore.checkUnmarked` tells).
    case unmarked
    /// A SQLite database with another program's application id.
    case otherApplication(UInt32)
    /// Not a SQLite database at all (damaged, or some other file).
    case notSQLite

    static func inspect(_ path: String) -> DatabaseFileState {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return errno == ENOENT ? .missing : .unmarked }  // let SQLite name other errors
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 100)
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 100, 0) }
        if n == 0 { return .empty }
        guard n == 100, header.starts(with: Array("SQLite format 3\0".utf8)) else { return .notSQLite }
        // Offset 68: the application id, big-endian (PRAGMA application_id).
        let id = header[68..<72].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return id == 0 ? .unmarked : id == SubjectStore.applicationID ? .marked : .otherApplication(id)
    }
}

extension SubjectStore {
    /// `PRAGMA application_id` of KoalaBooth databases ("KBth"), so that a database of
    /// another program is never taken for one.
    static let applicationID: UInt32 = 0x4B42_7468

    /// Refuses a database file that must not be opened or created: a missing or empty
    /// one beside stored subjects (a new database would hide them), and another
    /// program's.
    static func checkDatabaseFile(_ state: DatabaseFileState, path: String, home: URL) throws {
        switch state {
        case .missing, .empty:
            let folders = storedSubjectFolders(home)
            if folders > 0 { throw StoreError.databaseMissing(path: path, empty: state == .empty, subjectFolders: folders) }
        case .otherApplication(let id):
            throw StoreError.notKoalaBoothDatabase(path: path, reason: String(format: "its SQLite application id is 0x%08x, another program's", id))
        case .notSQLite:
            throw StoreError.databaseUnreadable(path: path, reason: "it does not begin with a SQLite header: it is damaged, or not a database")
        case .marked, .unmarked:
            break
        }
    }

    /// How many entries `subjects/` holds: the files of subjects, which only a database
    /// can describe.
    static func storedSubjectFolders(_ home: URL) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("subjects").path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.count
    }

    /// An unmarked database is KoalaBooth's when it is empty (new) or was migrated by
    /// KoalaBooth (`grdb_migrations` holds v1 and the subject table exists); read
    /// through a read-only connection, so a foreign file stays as it was.
    static func checkUnmarked(path: String) throws {
        var config = Configuration()
        config.readonly = true
        // Another process may be writing the database it has just created.
        config.busyMode = .timeout(15)
        let tables = try readOnlyConnection(path: path, configuration: config) { try DatabaseQueue(path: $0, configuration: $1) }.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        }
        if tables.isEmpty { return }
        if Set(tables).isSuperset(of: ["grdb_migrations", "subject", "photo", "trainingRun"]) { return }
        let shown = tables.prefix(5).joined(separator: ", ") + (tables.count > 5 ? ", …" : "")
        throw StoreError.notKoalaBoothDatabase(path: path, reason: "it has no KoalaBooth application id and holds tables KoalaBooth did not make: \(shown)")
    }

    /// Opens `path` read-only. A WAL database in a directory that cannot be written has
    /// no `-shm` file SQLite could create; then it is opened as immutable, which is
    /// exact because nothing can change it there (a leftover `-wal` file would have
    /// let the first attempt succeed).
    static func readOnlyConnection<D: DatabaseReader>(path: String, configuration: Configuration,
                                                      open: (String, Configuration) throws -> D) throws -> D {
        do {
            let db = try open(path, configuration)
            _ = try db.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM sqlite_master") }
            return db
        } catch let error as DatabaseError where [ResultCode.SQLITE_CANTOPEN, .SQLITE_READONLY, .SQLITE_IOERR].contains(error.resultCode) {
            var allowed = CharacterSet.urlPathAllowed
            allowed.remove(charactersIn: "?#%")
            let encoded = path.addingPercentEncoding(withAllowedCharacters: allowed) ?? path
            return try open("file:\(encoded)?immutable=1", configuration)
        }
    }

    /// Creates `home` if needed and says whether it can be written. A directory (or
    /// database file) that cannot be written is opened read-only when it already holds
    /// a database; without one there is nothing to read.
    static func prepareDirectory(_ home: URL, databasePath: String, databaseExists: Bool) throws -> Bool {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: home.path, isDirectory: &isDirectory) {
            if !isDirectory.boolValue { throw StoreError.homeNotADirectory(path: home.path) }
        } else {
            try makeDirectories(home.path)
        }
        // Permission bits say nothing on a read-only mount or for root; try a write.
        let probe = home.appendingPathComponent("\(Leftovers.probePrefix)\(getpid())").path
        let fd = open(probe, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 {
            let code = errno
            if code == ENOSPC || code == EDQUOT { throw StoreError.diskFull(path: home.path, available: availableBytes(home)) }
            if databaseExists && [EROFS, EACCES, EPERM].contains(code) { return false }
            throw StoreError.homeNotWritable(path: home.path, reason: String(cString: strerror(code)))
        }
        close(fd)
        unlink(probe)
        if databaseExists && access(databasePath, W_OK) != 0 && [EROFS, EACCES, EPERM].contains(errno) { return false }
        return true
    }

    /// `mkdir -p` reporting the failing component's errno.
    static func makeDirectories(_ path: String) throws {
        var missing: [String] = []
        var p = path
        while !p.isEmpty && p != "/" && !FileManager.default.fileExists(atPath: p) {
            missing.append(p)
            p = (p as NSString).deletingLastPathComponent
        }
        for dir in missing.reversed() where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            if errno == ENOSPC { throw StoreError.diskFull(path: path, available: availableBytes(URL(fileURLWithPath: p))) }
            throw StoreError.homeNotWritable(path: path, reason: "cannot create \(dir): \(String(cString: strerror(errno)))")
        }
    }

    /// The schema version a newer KoalaBooth wrote, or nil when this one understands it.
    static func newerSchema(_ db: Database) throws -> Int? {
        let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
        let superseded = try migrator.hasBeenSuperseded(db)
        return version > schemaVersion || superseded ? max(version, schemaVersion + 1) : nil
    }

    /// Brings the schema to this version; the caller holds `lockPath`, since GRDB reads
    /// the applied migrations outside the migration's transaction and two processes
    /// would otherwise both create the tables.
    static func migrate(_ pool: DatabasePool, path: String) throws {
        if let newer = try pool.read(newerSchema) {
            throw StoreError.databaseTooNew(path: path, version: newer, supported: schemaVersion)
        }
        if try pool.read(migrator.hasCompletedMigrations) { return }
        try migrator.migrate(pool)
    }

    /// A read-only store cannot migrate: its schema must already be this version's.
    static func checkReadOnlySchema(_ pool: DatabasePool, home: URL, path: String) throws {
        let (newer, complete) = try pool.read { db in (try newerSchema(db), try migrator.hasCompletedMigrations(db)) }
        if let newer { throw StoreError.databaseTooNew(path: path, version: newer, supported: schemaVersion) }
        if !complete { throw StoreError.readOnly(path: home.path) }
    }

    static func lockPath(_ home: URL) -> String { home.appendingPathComponent(".migrate.lock").path }

    static func withLock<T>(_ path: String, _ body: () throws -> T) throws -> T {
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        if fd < 0 { throw StoreError.homeNotWritable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    // MARK: Errors of a full disk or a read-only directory

    /// Free bytes on the file system holding `url` for this user (root may use the
    /// reserved blocks too), or nil if unknown. The one measure of free space: the
    /// full-disk errors here and generation's check of its output folder use it.
    public static func availableBytes(_ url: URL) -> Int64? {
        var s = statvfs()
        guard statvfs(url.path, &s) == 0 else { return nil }
        return Int64(getuid() == 0 ? s.f_bfree : s.f_bavail) * Int64(s.f_frsize)
    }

    /// What a SQLite failure in `home` means for the user: a full disk (SQLITE_FULL,
    /// or an I/O error with next to no space left, which is how SQLite reports a
    /// `-shm` file it cannot grow), a read-only directory, or `error` itself.
    static func translate(_ error: DatabaseError, home: URL) -> Error? {
        switch error.resultCode {
        case .SQLITE_FULL:
            return StoreError.diskFull(path: home.path, available: availableBytes(home))
        case .SQLITE_IOERR, .SQLITE_CANTOPEN:
            if let free = availableBytes(home), free < 1 << 20 { return StoreError.diskFull(path: home.path, available: free) }
            return nil
        case .SQLITE_READONLY:
            return StoreError.readOnly(path: home.path)
        default:
            return nil
        }
    }

    /// `error` of a file operation in `home` as a full disk, when it is ENOSPC.
    static func translate(fileError error: Error, home: URL) -> Error? {
        let ns = error as NSError
        let posix = (ns.userInfo[NSUnderlyingErrorKey] as? NSError).flatMap { $0.domain == NSPOSIXErrorDomain ? $0.code : nil }
        if (ns.domain == NSCocoaErrorDomain && ns.code == CocoaError.fileWriteOutOfSpace.rawValue)
            || (ns.domain == NSPOSIXErrorDomain && (ns.code == Int(ENOSPC) || ns.code == Int(EDQUOT)))
            || posix == Int(ENOSPC) || posix == Int(EDQUOT) {
            return StoreError.diskFull(path: home.path, available: availableBytes(home))
        }
        return nil
    }
}
