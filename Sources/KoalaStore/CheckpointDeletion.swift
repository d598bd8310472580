import Foundation
import GRDB

extension SubjectStore {
    /// Deletes checkpoints, rows and files: each checkpoint's recorded file and the other
    /// `files` that belong to them (kohya copy, optimizer and resume state, a full
    /// fine-tune's folder; folders are removed whole). The rows go first, in one
    /// transaction; only once it has committed are the files moved aside (one rename
    /// each, in the order given after the recorded files) and removed. A failure before
    /// the commit changes nothing; a crash after it leaves at worst files no row refers
    /// to — never a row whose file is gone — so pass last the file by which the caller
    /// finds the checkpoint again (its resume state), and a retry completes the job.
    /// Generations drawn with a deleted checkpoint stay, linked to their run; their
    /// checkpoint link becomes nil (`ON DELETE SET NULL`).
    ///
    /// Throws `outsideHome` for a file outside the data directory (nothing is changed),
    /// `fileOperationFailed` when a file cannot be moved after the rows were deleted.
    public func deleteCheckpoints(_ checkpoints: [Checkpoint], files: [URL] = []) throws {
        var seen = Set<String>()
        var urls: [URL] = []
        for u in checkpoints.map({ url(forRelativePath: $0.path) }) + files {
            let rel = try relativePath(of: u)
            if seen.insert(rel).inserted { urls.append(url(forRelativePath: rel)) }
        }
        try database.write { db in
            for c in checkpoints {
                guard let id = c.id else { preconditionFailure("deleteCheckpoints needs checkpoints read from the store") }
                _ = try Checkpoint.deleteOne(db, key: id)
            }
            try inject(.beforeCommit)
        }
        let present = urls.filter { FileManager.default.fileExists(atPath: $0.path) }
        guard !present.isEmpty else { return }
        let trash = try makeTemporaryDirectory("trash")
        defer { try? FileManager.default.removeItem(at: trash) }
        // Parked under their original paths so a kill here leaves trash the next start can sort out.
        for u in present { try move(u, to: trash.appendingPathComponent(Leftovers.parkedName(try relativePath(of: u)))) }
    }
}
