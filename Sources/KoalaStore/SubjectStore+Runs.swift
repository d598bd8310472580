import Foundation
import GRDB

extension SubjectStore {
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
}
