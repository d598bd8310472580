import Foundation
import GRDB

extension SubjectStore {
    /// A subject's generations, newest first.
    public func generations(subjectID: Int64, limit: Int? = nil) throws -> [Generation] {
        try database.read { db in
            let request = Generation.filter(Generation.Columns.subjectId == subjectID).order(Generation.Columns.id.desc)
            return try (limit.map { request.limit($0) } ?? request).fetchAll(db)
        }
    }
}
