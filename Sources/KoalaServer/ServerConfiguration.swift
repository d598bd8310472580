import Foundation
import KoalaApp

/// What `koalabooth serve` was started with.
public struct ServerConfiguration: Sendable {
    /// Loopback by default: the service is reachable only from this machine.
    public var host = "127.0.0.1"
    /// 0: any free port (the one chosen is reported once listening).
    public var port = 7860
    public var location: StoreLocation
    /// The models clients may name, by name (`ModelRegistry`).
    public var models: ModelRegistry
    /// Where training recipes are looked up by name (for the trainings endpoints to come).
    public var recipes: URL
    /// Largest request body accepted (413 beyond): what one upload may hold in memory.
    public var maxBodyBytes = ServerLimits.maxBodyBytes
    /// Smallest accepted shorter side of a photo, in pixels (the CLI's default).
    public var minimumPhotoSide = 256

    public init(location: StoreLocation, models: ModelRegistry, recipes: URL) {
        self.location = location
        self.models = models
        self.recipes = recipes
    }
}

/// Bounds on what one request may make the server hold or do.
public enum ServerLimits {
    /// 64 MiB: twenty large phone photos with room to spare.
    public static let maxBodyBytes = 64 << 20
    /// A JSON body (PATCH) is small.
    public static let maxJSONBytes = 64 << 10
    /// Photo parts in one upload (a subject needs 3-20).
    public static let maxPhotosPerRequest = 100
}

/// Why the server did not start. The description says what is wrong; the CLI adds which
/// command fixes it.
public enum ServeError: Error, Equatable, CustomStringConvertible {
    /// A non-loopback address while no unrevoked API key exists: every request would be
    /// refused, or, were auth ever off, anyone on the network could use the service.
    case noKeyForPublicAddress(host: String)
    case cannotListen(host: String, port: Int, reason: String)
    case invalidModelName(name: String, reason: String)
    case duplicateModelName(name: String)

    public var description: String {
        switch self {
        case .noKeyForPublicAddress(let host):
            return "refusing to listen on \(host), which other machines can reach, while the data directory has no API key. Make an API key first, or listen on a loopback address such as 127.0.0.1."
        case .cannotListen(let host, let port, let reason):
            return "cannot listen on \(host):\(port) (\(reason)). Choose another port (0 picks a free one) or stop the program using it."
        case .invalidModelName(let name, let reason):
            return "invalid model name '\(name)': \(reason). Use 1-64 letters, digits, '-', '_' and '.', starting with a letter or digit."
        case .duplicateModelName(let name):
            return "the model name \(name) is given twice; each model needs its own name."
        }
    }
}

/// Whether `host` names this machine only: 127.0.0.0/8, ::1 or localhost.
public func isLoopback(host: String) -> Bool {
    if host.lowercased() == "localhost" { return true }
    var v4 = in_addr()
    if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, host, &v6) == 1 {
        return withUnsafeBytes(of: &v6) { $0.elementsEqual([UInt8](repeating: 0, count: 15) + [1]) }
    }
    return false
}
