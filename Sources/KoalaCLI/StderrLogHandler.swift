import Foundation
import Logging

/// Writes the libraries' log messages (swift-log) to stderr as the program's own lines:
/// `koalabooth: …` for errors, `warning: …` for warnings; stdout stays clean for `--json`.
/// Below `warning` nothing is shown unless `KOALABOOTH_LOG=debug|info|notice` asks for it.
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level

    public init(label: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
        logLevel = environment["KOALABOOTH_LOG"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .warning
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                    file: String, function: String, line: UInt) {
        FileHandle.standardError.write(Data((Self.prefix(level) + "\(message)\n").utf8))
    }

    static func prefix(_ level: Logger.Level) -> String {
        switch level {
        case .critical, .error: "koalabooth: "
        case .warning: "warning: "
        default: ""
        }
    }
}
