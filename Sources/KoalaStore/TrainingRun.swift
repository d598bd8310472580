import Foundation
import GRDB

/// Where a training run stands.
public enum RunStatus: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case queued, running, finished, failed, interrupted
}

/// One DreamBooth training of a subject: what it started from (base model and its
/// fingerprint, the full recipe), how far it got, and how it ended.
public struct TrainingRun: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "trainingRun"

    public var id: Int64?
    public var subjectId: Int64
    public var status: RunStatus
    /// The base model folder as given (absolute, or relative to where training ran).
    public var baseModelPath: String
    /// Identifies the base model's weights (a hash of its files), to tell if it changed.
    public var baseModelFingerprint: String
    /// The complete recipe as used, so a run can be repeated or resumed exactly.
    public var recipe: String
    public var totalSteps: Int
    public var stepsDone: Int
    public var lastLoss: Double?
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// Last progress report; a `running` run whose heartbeat is old was killed.
    public var updatedAt: Date
    /// Time spent training, summed over resumptions.
    public var elapsedSeconds: Double
    public var errorMessage: String?

    public init(id: Int64? = nil, subjectId: Int64, status: RunStatus = .queued, baseModelPath: String,
                baseModelFingerprint: String, recipe: String, totalSteps: Int, stepsDone: Int = 0,
                lastLoss: Double? = nil, createdAt: Date = Date(), startedAt: Date? = nil, finishedAt: Date? = nil,
                updatedAt: Date? = nil, elapsedSeconds: Double = 0, errorMessage: String? = nil) {
        self.id = id
        self.subjectId = subjectId
        self.status = status
        self.baseModelPath = baseModelPath
        self.baseModelFingerprint = baseModelFingerprint
        self.recipe = recipe
        self.totalSteps = totalSteps
        self.stepsDone = stepsDone
        self.lastLoss = lastLoss
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.updatedAt = updatedAt ?? createdAt
        self.elapsedSeconds = elapsedSeconds
        self.errorMessage = errorMessage
    }

    public enum Columns: String, ColumnExpression { case id, subjectId, status, createdAt }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    /// Whether a process may still be working on it.
    public var isUnfinished: Bool { status == .queued || status == .running }
}

extension SubjectStore {
    /// Marks `interrupted`, with the reason in `errorMessage`, the runs left `queued` or
    /// `running` by a process that ended without recording how (SIGKILL, a crash, a full
    /// disk failing its last write): those whose subject's training lock (`TrainingLock`)
    /// nobody holds, or a process training another run holds. `holding`: a lock this
    /// process holds and has not started a run under yet, so every unfinished run of
    /// that subject is abandoned. Called when training starts and when runs are listed;
    /// returns the runs it marked.
    @discardableResult
    public func markAbandonedRuns(holding lock: TrainingLock? = nil) throws -> [TrainingRun] {
        let unfinished = [RunStatus.queued, .running].map(\.rawValue)
        let candidates = try database.read { db in try TrainingRun.filter(unfinished.contains(TrainingRun.Columns.status)).fetchAll(db) }
        guard !candidates.isEmpty else { return [] }
        var marked: [TrainingRun] = []
        // The lock is looked at inside the write transaction: a `train` that takes it
        // and then records its run as running cannot slip in between look and write.
        try database.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) {
                for candidate in candidates {
                    guard var run = try TrainingRun.fetchOne(db, key: candidate.id!), run.isUnfinished else { continue }
                    if lock?.subjectID != run.subjectId, let holder = TrainingLock.holder(subjectID: run.subjectId, in: self),
                       holder.runID == nil || holder.runID == run.id { continue }
                    run.status = .interrupted
                    run.errorMessage = "the process training it ended without recording an outcome (killed, crashed, or its last write failed) "
                        + "after step \(run.stepsDone) of \(run.totalSteps); its last checkpoint is kept and a resume continues from there"
                    run.updatedAt = Date()
                    try run.update(db)
                    marked.append(run)
                }
                return .commit
            }
        }
        return marked
    }
}
