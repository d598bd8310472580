import Foundation
import GRDB

extension SubjectStore {

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

    func stage(_ inputs: [PhotoInput]) throws -> Staged {
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
    func insertPhotos(_ db: Database, _ staged: Staged, subjectID: Int64, moved: inout [URL]) throws -> PhotoImport {
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
}
