import ArgumentParser
import Foundation
import KoalaApp
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
        let entries = try store.map { try RunListing.list(in: $0, subject: subject) } ?? []
        if json { return try Output.json(entries) }
        if entries.isEmpty {
            print("No training runs\(subject.map { " for \($0)" } ?? "") yet.")
            return
        }
        let names = Dictionary(entries.filter { !$0.subject.isEmpty }.map { ($0.run.subjectId, $0.subject) }) { a, _ in a }
        printRunTable(entries.map(\.run), subjectNames: names)
    }
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
        let detail = try RunListing.show(in: store, id: id)
        if json { return try Output.json(detail) }
        let r = detail.run, subject = detail.subject
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
