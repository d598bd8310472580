import Foundation
import KoalaTestSupport
import XCTest

/// Runs the built `koalabooth` executable, as a user would.
struct CLIResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

enum CLI {
    static var executable: URL {
        // The test bundle sits next to the products (…/debug/KoalaBoothPackageTests.xctest).
        var dir = Bundle(for: CLIMarker.self).bundleURL
        while dir.pathExtension == "xctest" || !FileManager.default.fileExists(atPath: dir.appendingPathComponent("koalabooth").path) {
            let up = dir.deletingLastPathComponent()
            if up == dir { break }
            dir = up
        }
        return dir.appendingPathComponent("koalabooth")
    }

    @discardableResult
    static func run(_ args: [String], environment: [String: String] = [:]) throws -> CLIResult {
        let r = try runChildProcess(executable, arguments: args, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        return CLIResult(status: r.status, stdout: r.stdout, stderr: r.stderr)
    }

    static func temporaryDirectory() throws -> URL {
        let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

final class CLIMarker {}

private let tinyModelRoot = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-cli-tiny-\(getpid())")

extension CLI {
    /// `model init --preset tiny --seed 0`, made once per test process and shared
    /// read-only by the tests that generate with it (the fixtures use the same seed).
    static let tinyModel: String = {
        let out = tinyModelRoot.appendingPathComponent("tiny").path
        try! FileManager.default.createDirectory(at: tinyModelRoot, withIntermediateDirectories: true)
        let r = try! CLI.run(["model", "init", "--preset", "tiny", "--seed", "0", "--out", out])
        precondition(r.status == 0, r.stderr)
        atexit { try? FileManager.default.removeItem(at: tinyModelRoot) }
        return out
    }()
}
