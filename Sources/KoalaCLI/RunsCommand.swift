import ArgumentParser
import Foundation
import KoalaStore

struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs",
        abstract: "List and inspect training runs.",
        subcommands: [RunsList.self, RunsShow.self]
    )
}

func printRunTable(_ runs: [TrainingRun], subjectNames: [Int64: String]) {
    Format.table(header: ["id", "subject", "status", "steps", "last loss", "time", "created"], rows: runs.map { r in
        [String(r.id!), subjectNames[r.subjectId] ?? "?", r.status.rawValue, "\(r.stepsDone)/\(r.totalSteps)",
         r.lastLoss.map { String(format: "%.4f", $0) } ?? "-", Output.duration(r.elapsedSeconds), Output.date(r.createdAt)]
    })
}

/// A run with its subject's name, as `runs list --json` prints it.
struct RunEntry: Encodable {
    var subject: String
    var run: TrainingRun
}

struct RunsList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List training runs, newest first.")

    @Option(help: "Only the runs of this subject.")
    var subject: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let store = try global.openExistingStore()
        if store == nil, let subject { throw StoreError.unknownSubject(name: subject) }
        // Runs whose process died show as interrupted, not as running forever (best
        // effort: a read-only data directory is listed as it is).
        // Bad arguments are refused before anything is written.
        let subjectID = try store.flatMap { store in try subject.map { try store.requireSubject(named: $0).id! } }
        _ = try? store?.markAbandonedRuns()
        let names = Dictionary(uniqueKeysWithValues: try store?.subjects().map { ($0.subject.id!, $0.subject.name) } ?? [])
        let runs = try store.map { store in try store.runs(subjectID: subjectID) } ?? []
        if json { return try Output.json(runs.map { RunEntry(subject: names[$0.subjectId] ?? "", run: $0) }) }
        if runs.isEmpty {
            print("No training runs\(subject.map { " for \($0)" } ?? "") yet.")
            return
        }
        printRunTable(runs, subjectNames: names)
    }
}

/// One run with its checkpoints, as `runs show --json` prints it.
struct RunDetail: Encodable {
    var subject: String
    var run: TrainingRun
    var checkpoints: [Checkpoint]
}

struct RunsShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a training run: recipe, progress, timings and checkpoints.")

    @Argument(help: "Run id (see `runs list`).")
    var id: Int64

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        guard let store = try global.openExistingStore() else { throw StoreError.unknownRun(id: id) }
        guard try store.run(id: id) != nil else { throw StoreError.unknownRun(id: id) }
        _ = try? store.markAbandonedRuns()
        guard let r = try store.run(id: id) else { throw StoreError.unknownRun(id: id) }
        let subject = try store.subject(id: r.subjectId)?.name ?? "?"
        let detail = RunDetail(subject: subject, run: r, checkpoints: try store.checkpoints(runID: id))
        if json { return try Output.json(detail) }
        print("run \(id) of \(subject): \(r.status.rawValue), step \(r.stepsDone)/\(r.totalSteps)"
              + (r.lastLoss.map { String(format: ", last loss %.4f", $0) } ?? ""))
        print("base model: \(r.baseModelPath) (fingerprint \(r.baseModelFingerprint))")
        print("created \(Output.date(r.createdAt)), started \(Output.date(r.startedAt)), finished \(Output.date(r.finishedAt)), training time \(Output.duration(r.elapsedSeconds))")
        if let e = r.errorMessage { print("error: \(e)") }
        print("\ncheckpoints (\(detail.checkpoints.count)):")
        if detail.checkpoints.isEmpty { print("none") } else {
            Format.table(header: ["step", "kind", "bytes", "sha256", "path"], rows: detail.checkpoints.map { c in
                [String(c.step), c.kind.rawValue, Format.bytes(c.byteCount), String(c.sha256.prefix(12)), c.path]
            })
        }
        print("\nrecipe:\n\(r.recipe)")
    }
}
