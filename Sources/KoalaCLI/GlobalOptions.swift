import ArgumentParser
import Foundation
import KoalaApp
import KoalaStore

/// `--home`, shared by every command that uses the data directory.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The data directory (default: $KOALABOOTH_HOME, else ./.koalabooth).", valueName: "dir"))
    var home: String?

    var homeURL: URL { location.home }

    /// The data directory the use cases open.
    var location: StoreLocation { StoreLocation(homeOption: home) }

    /// Opens the store, creating the directory and database if needed
    /// (`StoreLocation.open`).
    func openStore(removeLeftovers: Bool = true) throws -> SubjectStore {
        try location.open(removeLeftovers: removeLeftovers)
    }

    /// Opens the store if its database exists (`StoreLocation.openExisting`).
    func openExistingStore(removeLeftovers: Bool = true) throws -> SubjectStore? {
        try location.openExisting(removeLeftovers: removeLeftovers)
    }
}

/// A user-facing error whose text is the whole message.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Output {
    /// A warning on stderr; stdout stays clean for `--json`.
    static func warn(_ message: String) {
        FileHandle.standardError.write(Data("warning: \(message)\n".utf8))
    }

    static func note(_ message: String) {
        FileHandle.standardError.write(Data("\(message)\n".utf8))
    }

    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    static func date(_ d: Date?) -> String {
        guard let d else { return "-" }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd HH:mm"
        return f.string(from: d)
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }
}
