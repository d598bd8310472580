import Logging

/// The library's log (swift-log). The `koalabooth` program routes it to stderr in its own
/// words (KoalaCLI's `StderrLogHandler`); a service routes it wherever its logs go.
public enum Diagnostics {
    public static let logger = Logger(label: "koalabooth")
}
