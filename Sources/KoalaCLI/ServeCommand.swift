import ArgumentParser
import Foundation
import KoalaApp
import KoalaServer
import Logging

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the HTTP API (JSON under /v1, described at /v1/openapi.json).",
        discussion: """
            Listens on 127.0.0.1 (this machine only) unless --host says otherwise; a host other machines can \
            reach needs an API key first (`koalabooth keys create NAME`). Every request carries \
            `Authorization: Bearer KEY`. Models are offered by name (--model NAME=DIR): clients name them, \
            never paths. Prints the URL once listening; Ctrl-C stops it.
            Example: koalabooth serve --model tiny=models/tiny --port 0
            """
    )

    @Option(help: "Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; the URL printed says which).")
    var port = 7860

    @Option(name: .customLong("model"), help: ArgumentHelp("A model clients may use, by name: NAME=DIR (a diffusers folder); repeatable.", valueName: "name=dir"))
    var models: [String] = []

    @Option(help: ArgumentHelp("Folder of training recipes clients will name (NAME.toml), for the trainings endpoints still to come.", valueName: "dir"))
    var recipes = "recipes"

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        for m in models where Self.split(m) == nil {
            throw ValidationError("--model takes NAME=DIR (for example --model tiny=models/tiny), got '\(m)'")
        }
    }

    static func split(_ entry: String) -> (name: String, folder: String)? {
        guard let eq = entry.firstIndex(of: "="), eq != entry.startIndex, entry.index(after: eq) != entry.endIndex else { return nil }
        return (String(entry[..<eq]), String(entry[entry.index(after: eq)...]))
    }

    func run() throws {
        var config = ServerConfiguration(location: global.location, models: try ModelRegistry(models.compactMap(Self.split)),
                                         recipes: URL(fileURLWithPath: recipes).standardizedFileURL)
        config.host = host
        config.port = port
        let server = APIServer(configuration: config)
        let names = config.models.models.map(\.name), home = config.location.home.path
        try Self.waitFor {
            try await server.run(handleSignals: true) { url in
                // The first line is the URL, for scripts and tests to read.
                print("listening on \(url.absoluteString)")
                print("data directory \(home); models: \(names.isEmpty ? "none" : names.joined(separator: ", "))")
                fflush(nil)
            }
        }
    }

    /// Runs `work` to its end from this synchronous command.
    static func waitFor(_ work: @escaping @Sendable () async throws -> Void) throws {
        final class Outcome: @unchecked Sendable { var error: (any Error)? }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { try await work() } catch { outcome.error = error }
            done.signal()
        }
        done.wait()
        if let error = outcome.error { throw error }
    }

    /// A `ServeError` with the command that fixes it.
    static func text(_ e: ServeError) -> String {
        switch e {
        case .noKeyForPublicAddress(let host):
            return "refusing to listen on \(host), which other machines can reach, while the data directory has no API key. Make one first with `koalabooth keys create NAME` (and send it as `Authorization: Bearer KEY`), or leave --host at 127.0.0.1."
        case .cannotListen(let host, let port, let reason):
            return "cannot listen on \(host):\(port) (\(reason)). Choose another --port (0 picks a free one) or stop the program using it."
        case .invalidModelName(let name, let reason):
            return "invalid model name '\(name)' in --model: \(reason). Use 1-64 letters, digits, '-', '_' and '.', starting with a letter or digit."
        case .duplicateModelName(let name):
            return "--model \(name)=… is given twice; give each model its own name."
        }
    }
}
