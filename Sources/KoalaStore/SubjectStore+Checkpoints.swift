import Foundation
import GRDB

extension SubjectStore {
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
}
