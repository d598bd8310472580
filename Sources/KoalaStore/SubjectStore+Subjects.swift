import Foundation
import GRDB

/// A subject with counts for listings.
public struct SubjectSummary: Codable, Sendable, Equatable {
    public var subject: Subject
    public var photoCount: Int
    public var runCount: Int
    public var generationCount: Int
    /// Status of the most recent run, if any.
    public var lastRunStatus: RunStatus?
}

extension SubjectStore {
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
    /// `fileUnreadable`, `fileOperationFailed`. `ownerKeyID`: the API key that makes it
    /// (`SubjectOwnership`), nil on the command line.
    public func createSubject(name: String, token: String, classNoun: String, notes: String = "",
                              photos: [PhotoInput], ownerKeyID: Int64? = nil) throws -> (subject: Subject, photos: PhotoImport) {
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
                subject.updatedAt = subject.createdAt
                do {
                    try subject.insert(db)
                } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
                    throw StoreError.duplicateName(name: name)
                }
                if let ownerKeyID { try SubjectOwnership.set(db, subjectID: subject.id!, keyID: ownerKeyID) }
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
}
