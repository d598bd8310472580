import Foundation
import KoalaApp
import KoalaServer
import XCTest

/// What `serve` refuses before it serves anything.
final class ServerStartTests: ServerTestCase {
    func testLoopbackAddresses() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"] { XCTAssertTrue(isLoopback(host: host), host) }
        for host in ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "128.0.0.1", "example.org", "::2", ""] { XCTAssertFalse(isLoopback(host: host), host) }
    }

    /// Checked only, never bound: tests listen on loopback alone.
    func testPublicAddressNeedsAnUnrevokedKey() throws {
        let fresh = StoreLocation(home: root.appendingPathComponent("fresh"))
        var config = ServerConfiguration(location: fresh, models: ModelRegistry(), recipes: root)
        config.host = "0.0.0.0"
        XCTAssertThrowsError(try APIServer(configuration: config).checkExposure()) { error in
            XCTAssertEqual(error as? ServeError, .noKeyForPublicAddress(host: "0.0.0.0"))
        }
        _ = try APIKeyUseCases(location: fresh).create(name: "k")
        XCTAssertNoThrow(try APIServer(configuration: config).checkExposure())
        try APIKeyUseCases(location: fresh).revoke(name: "k")
        XCTAssertThrowsError(try APIServer(configuration: config).checkExposure())
        config.host = "127.0.0.1"
        XCTAssertNoThrow(try APIServer(configuration: config).checkExposure(), "loopback needs no key to start")
    }

    func testAPortInUseIsAStartError() async throws {
        var config = ServerConfiguration(location: location, models: ModelRegistry(), recipes: root)
        config.port = try XCTUnwrap(baseURL.port)
        let server = APIServer(configuration: config)
        let outcome: ServeError = try await withTimeout(30) {
            do {
                try await server.run { _ in }
                return nil
            } catch {
                return error as? ServeError
            }
        }
        guard case .cannotListen(let host, let port, _) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(host, "127.0.0.1")
        XCTAssertEqual(port, config.port)
        XCTAssertTrue(outcome.description.contains("Choose another port"), outcome.description)
    }

    func testModelRegistryChecksNamesAndFolders() throws {
        XCTAssertThrowsError(try ModelRegistry([("bad name", root.path)])) { error in
            guard case .invalidModelName = error as? ServeError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try ModelRegistry([("empty", root.path)]), "not a diffusers folder")
    }
}
