import Foundation
import KoalaStore

/// A run with its subject's name, as `runs list --json` prints it.
public struct RunEntry: Encodable, Sendable {
    public var subject: String
    public var run: TrainingRun
}

/// One run with its checkpoints, as `runs show --json` prints it.
public struct RunDetail: Encodable, Sendable {
    public var subject: String
    public var run: TrainingRun
    public var checkpoints: [Checkpoint]
}

/// Listing and inspecting training runs. Runs whose process died are first marked
/// `interrupted` (best effort: a read-only data directory is listed as it is), so they
/// do not show as running forever.
public enum RunListing {
    /// The runs, newest first: all, or those of the subject named `subject`.
    public static func list(in store: SubjectStore, subject: String? = nil) throws -> [RunEntry] {
        // Bad arguments are refused before anything is written.
        let subjectID = try subject.map { try store.requireSubject(named: $0).id! }
        _ = try? store.markAbandonedRuns()
        let names = Dictionary(uniqueKeysWithValues: try store.subjects().map { ($0.subject.id!, $0.subject.name) })
        return try store.runs(subjectID: subjectID).map { RunEntry(subject: names[$0.subjectId] ?? "", run: $0) }
    }

    /// The run `id` with its checkpoints.
    public static func show(in store: SubjectStore, id: Int64) throws -> RunDetail {
        guard try store.run(id: id) != nil else { throw StoreError.unknownRun(id: id) }
        _ = try? store.markAbandonedRuns()
        guard let r = try store.run(id: id) else { throw StoreError.unknownRun(id: id) }
        let subject = try store.subject(id: r.subjectId)?.name ?? "?"
        return RunDetail(subject: subject, run: r, checkpoints: try store.checkpoints(runID: id))
    }
}
