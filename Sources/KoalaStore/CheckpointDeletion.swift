import Foundation
import GRDB

extension SubjectStore {
    /// Deletes checkpoints, rows and files, all or nothing: each checkpoint's recorded
    /// file and the other `files` that belong to them (kohya copy, optimizer and resume
    /// state, a full fine-tune's folder; folders are removed whole) are moved aside,
    /// the rows deleted in one transaction, and the files moved back if it does not
    /// commit. Generations drawn with a deleted checkpoint stay, linked to their run;
    /// their checkpoint link becomes nil (`ON DELETE SET NULL`).
    ///
    /// Throws `outsideHome` for a file outside the data directory (nothing is changed).
    public func deleteCheckpoints(_ checkpoints: [Checkpoint], files: [URL] = []) throws {
        var seen = Set<String>()
        var urls: [URL] = []
        for u in checkpoints.map({ url(forRelativePath: $0.path) }) + files {
            let rel = try relativePath(of: u)
            if seen.insert(rel).inserted { urls.append(url(forRelativePath: rel)) }
        }
        let trash = try makeTemporaryDirectory("trash")
        defer { try? FileManager.default.removeItem(at: trash) }
        var parked: [(original: URL, parked: URL)] = []
        do {
            for (i, u) in urls.enumerated() where FileManager.default.fileExists(atPath: u.path) {
                let dest = trash.appendingPathComponent("\(i)")
                try move(u, to: dest)
                parked.append((u, dest))
            }
            try database.write { db in
                for c in checkpoints {
                    guard let id = c.id else { preconditionFailure("deleteCheckpoints needs checkpoints read from the store") }
                    _ = try Checkpoint.deleteOne(db, key: id)
                }
                try inject(.beforeCommit)
            }
        } catch {
            for p in parked.reversed() { try? move(p.parked, to: p.original) }
            throw error
        }
    }
}
