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

/// A subject with counts for listings.
public struct SubjectSummary: Codable, Sendable, Equatable {
    public var subject: Subject
    public var photoCount: Int
    public var runCount: Int
    public var generationCount: Int
    /// Status of the most recent run, if any.
    public var lastRunStatus: RunStatus?
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
    public static let schemaVersion = 1
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

    // MARK: Schema

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "subject") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique().collate(.nocase)
                t.column("token", .text).notNull()
                t.column("classNoun", .text).notNull()
                t.column("notes", .text).notNull().defaults(to: "")
                t.column("createdAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "photo") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("subject", onDelete: .cascade).notNull()
                t.column("sha256", .text).notNull()
                t.column("originalName", .text).notNull()
                t.column("path", .text).notNull().unique()
                t.column("byteCount", .integer).notNull()
                t.column("width", .integer).notNull()
                t.column("height", .integer).notNull()
                t.column("addedAt", .datetime).notNull()
                t.uniqueKey(["subjectId", "sha256"])
            }
            try db.create(table: "trainingRun") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("subject", onDelete: .cascade).notNull()
                t.column("status", .text).notNull()
                    .check { RunStatus.allCases.map(\.rawValue).contains($0) }
                t.column("baseModelPath", .text).notNull()
                t.column("baseModelFingerprint", .text).notNull()
                t.column("recipe", .text).notNull()
                t.column("totalSteps", .integer).notNull()
                t.column("stepsDone", .integer).notNull().defaults(to: 0)
                t.column("lastLoss", .double)
                t.column("createdAt", .datetime).notNull()
                t.column("startedAt", .datetime)
                t.column("finishedAt", .datetime)
                t.column("updatedAt", .datetime).notNull()
                t.column("elapsedSeconds", .double).notNull().defaults(to: 0)
                t.column("errorMessage", .text)
            }
            try db.create(table: "checkpoint") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("run", inTable: "trainingRun", onDelete: .cascade).notNull()
                t.column("step", .integer).notNull()
                t.column("kind", .text).notNull()
                    .check { CheckpointKind.allCases.map(\.rawValue).contains($0) }
                t.column("path", .text).notNull().unique()
                t.column("sha256", .text).notNull()
                t.column("byteCount", .integer).notNull()
                t.column("createdAt", .datetime).notNull()
                t.uniqueKey(["runId", "step", "kind"])
            }
            try db.create(table: "generation") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("subject", onDelete: .cascade).notNull()
                t.belongsTo("run", inTable: "trainingRun", onDelete: .setNull)
                t.belongsTo("checkpoint", onDelete: .setNull)
                t.column("prompt", .text).notNull()
                t.column("negativePrompt", .text).notNull().defaults(to: "")
                t.column("seed", .integer).notNull()
                t.column("steps", .integer).notNull()
                t.column("scheduler", .text).notNull()
                t.column("guidanceScale", .double).notNull()
                t.column("width", .integer).notNull()
                t.column("height", .integer).notNull()
                t.column("imagePath", .text).notNull().unique()
                t.column("createdAt", .datetime).notNull()
            }
            try db.execute(sql: "PRAGMA user_version = 1")
        }
        return m
    }

    // MARK: Paths

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

    // MARK: Subjects

    /// All subjects by name, with counts.
    public func subjects() throws -> [SubjectSummary] {
        try database.read { db in
            try Subject.order(Subject.Columns.name.collating(.nocase)).fetchAll(db).map { s in
                SubjectSummary(
                    subject: s,
                    photoCount: try Photo.filter(Photo.Columns.subjectId == s.id).fetchCount(db),
                    runCount: try TrainingRun.filter(TrainingRun.Columns.subjectId == s.id).fetchCount(db),
                    generationCount: try Generation.filter(Generation.Columns.subjectId == s.id).fetchCount(db),
                    lastRunStatus: try TrainingRun.filter(TrainingRun.Columns.subjectId == s.id)
                        .order(TrainingRun.Columns.id.desc).fetchOne(db)?.status)
            }
        }
    }

    /// The subject called `name` (ignoring case), or nil.
    public func subject(named name: String) throws -> Subject? {
        try database.read { db in try Subject.filter(Subject.Columns.name.collating(.nocase) == name).fetchOne(db) }
    }

    /// The subject called `name`; throws `StoreError.unknownSubject` if there is none.
    public func requireSubject(named name: String) throws -> Subject {
        guard let s = try subject(named: name) else { throw StoreError.unknownSubject(name: name) }
        return s
    }

    public func subject(id: Int64) throws -> Subject? {
        try database.read { db in try Subject.fetchOne(db, key: id) }
    }

    /// Creates a subject and imports its photos, all or nothing. Duplicate inputs (same
    /// bytes) are stored once. Throws `duplicateName`, `invalidName`, `invalidToken`,
    /// `fileUnreadable`, `fileOperationFailed`.
    public func createSubject(name: String, token: String, classNoun: String, notes: String = "",
                              photos: [PhotoInput]) throws -> (subject: Subject, photos: PhotoImport) {
        try Subject.validate(name: name)
        try Subject.validate(token: token)
        try Subject.validate(classNoun: classNoun)
        if try subject(named: name) != nil { throw StoreError.duplicateName(name: name) }
        let staged = try stage(photos)
        defer { staged.discard() }

        var moved: [URL] = []
        var createdDirectory: URL?
        do {
            return try write { db in
                var subject = Subject(name: name, token: token, classNoun: classNoun, notes: notes)
                do {
                    try subject.insert(db)
                } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                    throw StoreError.duplicateName(name: name)
                }
                let dir = subjectDirectory(subjectID: subject.id!)
                if !FileManager.default.fileExists(atPath: dir.path) { createdDirectory = dir }
                let result = try insertPhotos(db, staged, subjectID: subject.id!, moved: &moved)
                try inject(.beforeCommit)
                return (try Subject.fetchOne(db, key: subject.id!)!, result)
            }
        } catch {
            undoMoves(moved)
            if let createdDirectory { try? FileManager.default.removeItem(at: createdDirectory) }
            throw error
        }
    }

    /// Adds photos to a subject, all or nothing; photos it already holds are skipped
    /// and reported in `duplicates`.
    public func addPhotos(_ photos: [PhotoInput], toSubjectNamed name: String) throws -> PhotoImport {
        _ = try requireSubject(named: name)
        let staged = try stage(photos)
        defer { staged.discard() }
        var moved: [URL] = []
        do {
            return try write { db in
                guard var subject = try Subject.filter(Subject.Columns.name.collating(.nocase) == name).fetchOne(db) else {
                    throw StoreError.unknownSubject(name: name)
                }
                let result = try insertPhotos(db, staged, subjectID: subject.id!, moved: &moved)
                if !result.added.isEmpty {
                    subject.updatedAt = Date()
                    try subject.update(db)
                }
                try inject(.beforeCommit)
                return result
            }
        } catch {
            undoMoves(moved)
            throw error
        }
    }

    /// Renames a subject (its files are keyed by id and stay where they are).
    @discardableResult
    public func renameSubject(_ name: String, to newName: String) throws -> Subject {
        try Subject.validate(name: newName)
        return try write { db in
            guard var subject = try Subject.filter(Subject.Columns.name.collating(.nocase) == name).fetchOne(db) else {
                throw StoreError.unknownSubject(name: name)
            }
            if let other = try Subject.filter(Subject.Columns.name.collating(.nocase) == newName).fetchOne(db), other.id != subject.id {
                throw StoreError.duplicateName(name: newName)
            }
            subject.name = newName
            subject.updatedAt = Date()
            try subject.update(db)
            return try Subject.fetchOne(db, key: subject.id!)!
        }
    }

    /// Changes a subject's notes.
    public func setNotes(_ notes: String, forSubjectNamed name: String) throws {
        try write { db in
            guard var subject = try Subject.filter(Subject.Columns.name.collating(.nocase) == name).fetchOne(db) else {
                throw StoreError.unknownSubject(name: name)
            }
            subject.notes = notes
            subject.updatedAt = Date()
            try subject.update(db)
        }
    }

    /// Deletes a subject with its photos, runs, checkpoints and generations, rows and
    /// files. Its directory is moved aside first and moved back if the delete does not
    /// commit. Throws `subjectBusy` while a process trains the subject (`TrainingLock`).
    public func deleteSubject(named name: String) throws {
        let subject = try requireSubject(named: name)
        let lock = try TrainingLock.acquire(subject: subject, in: self, attempted: "delete")
        // A failed delete leaves no lock file behind either.
        defer { lock.releaseAndRemove() }
        let dir = subjectDirectory(subjectID: subject.id!)
        // Files recorded outside the subject's directory go too (after the commit).
        let outside = try recordedFiles(subjectID: subject.id!).filter { !$0.hasPrefix("subjects/\(subject.id!)/") }
        let trash = try makeTemporaryDirectory("trash")
        defer { try? FileManager.default.removeItem(at: trash) }
        let parked = trash.appendingPathComponent(Leftovers.parkedName(try relativePath(of: dir)))
        let hadDirectory = FileManager.default.fileExists(atPath: dir.path)
        if hadDirectory { try move(dir, to: parked) }
        do {
            try write { db in
                _ = try Subject.deleteOne(db, key: subject.id!)
                try inject(.beforeCommit)
            }
        } catch {
            if hadDirectory { try? move(parked, to: dir) }
            throw error
        }
        for path in outside { try? FileManager.default.removeItem(at: url(forRelativePath: path)) }
    }

    // MARK: Photos

    public func photos(subjectID: Int64) throws -> [Photo] {
        try database.read { db in
            try Photo.filter(Photo.Columns.subjectId == subjectID).order(Photo.Columns.addedAt, Photo.Columns.id).fetchAll(db)
        }
    }

    /// The photo of a subject named by a hash prefix (4+ hex digits), its original file
    /// name or its stored file name.
    public func findPhoto(subjectNamed name: String, matching query: String) throws -> Photo {
        let subject = try requireSubject(named: name)
        let all = try photos(subjectID: subject.id!)
        let q = query.lowercased()
        var matches = all.filter { $0.originalName == query || ($0.path as NSString).lastPathComponent == query }
        if matches.isEmpty && q.count >= 4 && q.allSatisfy(\.isHexDigit) {
            matches = all.filter { $0.sha256.hasPrefix(q) }
        }
        if matches.isEmpty { throw StoreError.photoNotFound(subject: subject.name, query: query) }
        if matches.count > 1 {
            throw StoreError.ambiguousPhoto(subject: subject.name, query: query,
                                            matches: matches.map { "\($0.sha256.prefix(12)) \($0.originalName)" })
        }
        return matches[0]
    }

    /// Removes one photo, row and file.
    public func removePhoto(_ photo: Photo) throws {
        let file = url(forRelativePath: photo.path)
        let trash = try makeTemporaryDirectory("trash")
        defer { try? FileManager.default.removeItem(at: trash) }
        let parked = trash.appendingPathComponent(Leftovers.parkedName(photo.path))
        let hadFile = FileManager.default.fileExists(atPath: file.path)
        if hadFile { try move(file, to: parked) }
        do {
            try write { db in
                _ = try Photo.deleteOne(db, key: photo.id!)
                if var subject = try Subject.fetchOne(db, key: photo.subjectId) {
                    subject.updatedAt = Date()
                    try subject.update(db)
                }
                try inject(.beforeCommit)
            }
        } catch {
            if hadFile { try? move(parked, to: file) }
            throw error
        }
    }

    // MARK: Runs, checkpoints, generations

    /// Training runs, newest first, of one subject or all.
    public func runs(subjectID: Int64? = nil) throws -> [TrainingRun] {
        try database.read { db in
            var request = TrainingRun.order(TrainingRun.Columns.id.desc)
            if let subjectID { request = request.filter(TrainingRun.Columns.subjectId == subjectID) }
            return try request.fetchAll(db)
        }
    }

    public func run(id: Int64) throws -> TrainingRun? {
        try database.read { db in try TrainingRun.fetchOne(db, key: id) }
    }

    /// Records a new run; returns it with its id.
    public func createRun(_ run: TrainingRun) throws -> TrainingRun {
        try write { db in
            var run = run
            run.id = nil
            try run.insert(db)
            return try TrainingRun.fetchOne(db, key: run.id!)!
        }
    }

    /// Saves a run's progress or outcome.
    public func updateRun(_ run: TrainingRun) throws {
        precondition(run.id != nil, "updateRun needs a run returned by createRun")
        try write { db in try run.update(db) }
    }

    /// Checkpoints of one run by step.
    public func checkpoints(runID: Int64) throws -> [Checkpoint] {
        try database.read { db in
            try Checkpoint.filter(Checkpoint.Columns.runId == runID).order(Checkpoint.Columns.step, Checkpoint.Columns.id).fetchAll(db)
        }
    }

    /// Checkpoints of all runs of a subject, newest run first.
    public func checkpoints(subjectID: Int64) throws -> [Checkpoint] {
        try database.read { db in
            try Checkpoint.fetchAll(db, sql: """
                SELECT checkpoint.* FROM checkpoint JOIN trainingRun ON trainingRun.id = checkpoint.runId
                WHERE trainingRun.subjectId = ? ORDER BY checkpoint.runId DESC, checkpoint.step, checkpoint.id
                """, arguments: [subjectID])
        }
    }

    /// The newest checkpoint of the subject's most recent finished run.
    public func latestFinishedCheckpoint(subjectID: Int64) throws -> (run: TrainingRun, checkpoint: Checkpoint)? {
        try database.read { db in
            let finished = try TrainingRun.filter(TrainingRun.Columns.subjectId == subjectID && TrainingRun.Columns.status == RunStatus.finished)
                .order(TrainingRun.Columns.id.desc).fetchAll(db)
            for run in finished {
                if let c = try Checkpoint.filter(Checkpoint.Columns.runId == run.id).order(Checkpoint.Columns.step.desc, Checkpoint.Columns.id.desc).fetchOne(db) {
                    return (run, c)
                }
            }
            return nil
        }
    }

    /// A subject's generations, newest first.
    public func generations(subjectID: Int64, limit: Int? = nil) throws -> [Generation] {
        try database.read { db in
            let request = Generation.filter(Generation.Columns.subjectId == subjectID).order(Generation.Columns.id.desc)
            return try (limit.map { request.limit($0) } ?? request).fetchAll(db)
        }
    }

    /// Every file path the database records for a subject.
    func recordedFiles(subjectID: Int64) throws -> [String] {
        try database.read { db in
            try String.fetchAll(db, sql: """
                SELECT path FROM photo WHERE subjectId = ?1
                UNION ALL SELECT checkpoint.path FROM checkpoint JOIN trainingRun ON trainingRun.id = checkpoint.runId WHERE trainingRun.subjectId = ?1
                UNION ALL SELECT imagePath FROM generation WHERE subjectId = ?1
                """, arguments: [subjectID])
        }
    }

    // MARK: Staging

    /// Input files copied into `tmp/` and hashed there, so what is recorded is exactly
    /// what is stored even if a source changes meanwhile.
    struct Staged {
        struct File {
            var input: PhotoInput
            var url: URL
            var sha256: String
            var size: Int
        }
        var directory: URL
        var files: [File]
        func discard() { try? FileManager.default.removeItem(at: directory) }
    }

    private func stage(_ inputs: [PhotoInput]) throws -> Staged {
        let dir = try makeTemporaryDirectory("stage")
        var files: [Staged.File] = []
        do {
            for (i, input) in inputs.enumerated() {
                let dest = dir.appendingPathComponent("\(i)")
                guard FileManager.default.isReadableFile(atPath: input.sourcePath) else {
                    throw StoreError.fileUnreadable(path: input.sourcePath, reason: FileManager.default.fileExists(atPath: input.sourcePath) ? "permission denied" : "no such file")
                }
                do {
                    try FileManager.default.copyItem(atPath: input.sourcePath, toPath: dest.path)
                } catch {
                    throw Self.translate(fileError: error, home: home)
                        ?? StoreError.fileOperationFailed(path: input.sourcePath, reason: "copying it into \(dir.path) failed: \(error.localizedDescription)")
                }
                let (sha, size) = try SHA256.hexOfFile(atPath: dest.path)
                files.append(.init(input: input, url: dest, sha256: sha, size: size))
                try inject(.stagedFile(index: i))
            }
        } catch {
            try? FileManager.default.removeItem(at: dir)
            throw error
        }
        return Staged(directory: dir, files: files)
    }

    /// Inserts rows for staged photos the subject lacks and moves their files into
    /// place; `moved` collects the moved files so the caller can undo.
    private func insertPhotos(_ db: Database, _ staged: Staged, subjectID: Int64, moved: inout [URL]) throws -> PhotoImport {
        var known: [String: String] = [:]
        for p in try Photo.filter(Photo.Columns.subjectId == subjectID).fetchAll(db) { known[p.sha256] = p.originalName }
        var result = PhotoImport()
        let photosDir = subjectDirectory(subjectID: subjectID).appendingPathComponent("photos")
        for file in staged.files {
            let original = (file.input.sourcePath as NSString).lastPathComponent
            if let same = known[file.sha256] {
                result.duplicates.append(.init(sourcePath: file.input.sourcePath, sha256: file.sha256, sameAs: same))
                continue
            }
            known[file.sha256] = original
            let ext = file.input.fileExtension.isEmpty ? "img" : file.input.fileExtension.lowercased()
            let dest = photosDir.appendingPathComponent("\(file.sha256).\(ext)")
            var photo = Photo(subjectId: subjectID, sha256: file.sha256, originalName: original,
                              path: try relativePath(of: dest), byteCount: file.size,
                              width: file.input.width, height: file.input.height)
            try photo.insert(db)
            try makeDirectory(photosDir)
            try move(file.url, to: dest)
            moved.append(dest)
            // As stored (dates keep milliseconds), so it equals what later reads return.
            result.added.append(try Photo.fetchOne(db, key: photo.id!)!)
        }
        return result
    }

    private func undoMoves(_ moved: [URL]) {
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

    private func makeDirectory(_ dir: URL) throws {
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
