import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KoalaTestSupport
import XCTest

/// `koalabooth keys …` and `koalabooth serve` as a user runs them.
final class KeysCLITests: XCTestCase {
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    @discardableResult
    func kb(_ args: String...) throws -> CLIResult { try CLI.run(args + ["--home", home.path]) }

    /// Runs `args` (with --home) and checks that it fails saying `message`.
    @discardableResult
    func assertRefused(_ args: String..., says message: String, file: StaticString = #filePath, line: UInt = #line) throws -> CLIResult {
        let r = try CLI.run(args + ["--home", home.path])
        XCTAssertNotEqual(r.status, 0, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(message), r.stderr, file: file, line: line)
        return r
    }

    func testCreateListRevoke() throws {
        let made = try kb("keys", "create", "phone-app")
        XCTAssertEqual(made.status, 0, made.stderr)
        let secret = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(secret.hasPrefix("kb_") && secret.count == 46 && !secret.contains("\n"), "stdout is the secret alone: \(made.stdout)")
        XCTAssertTrue(made.stderr.contains("not stored and cannot be shown again"), made.stderr)

        let json = try kb("keys", "create", "ci", "--json")
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: String])
        XCTAssertEqual(object["name"], "ci")
        XCTAssertTrue(object["key"]?.hasPrefix("kb_") == true)
        XCTAssertEqual(Set(object.keys), ["name", "key"])

        let list = try kb("keys", "list")
        XCTAssertEqual(list.status, 0, list.stderr)
        XCTAssertTrue(list.stdout.contains("phone-app") && list.stdout.contains("ci"), list.stdout)
        XCTAssertFalse(list.stdout.contains(secret) || list.stdout.contains(object["key"]!), "no secret in listings")

        let revoke = try kb("keys", "revoke", "phone-app")
        XCTAssertEqual(revoke.status, 0, revoke.stderr)
        XCTAssertTrue(revoke.stdout.contains("Revoked API key phone-app"), revoke.stdout)
        let listed = try kb("keys", "list", "--json")
        let keys = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(keys.map { $0["name"] as? String }, ["ci", "phone-app"])
        XCTAssertNil(keys[0]["revokedAt"])
        XCTAssertNotNil(keys[1]["revokedAt"])
        XCTAssertFalse(listed.stdout.contains(secret))
    }

    func testKeyErrors() throws {
        try kb("keys", "create", "app")
        try assertRefused("keys", "create", "APP", says: "an API key named APP already exists")
        try assertRefused("keys", "create", "my app", says: "invalid API key name 'my app'")
        try assertRefused("keys", "revoke", "nobody", says: "no API key named nobody")
        let empty = try CLI.run(["keys", "list", "--home", dir.appendingPathComponent("fresh").path])
        XCTAssertEqual(empty.status, 0)
        XCTAssertTrue(empty.stdout.contains("koalabooth keys create NAME"), empty.stdout)
    }

    func testServeRefusesAPublicAddressWithoutAKey() throws {
        let r = try assertRefused("serve", "--host", "0.0.0.0", "--port", "0", says: "refusing to listen on 0.0.0.0")
        XCTAssertTrue(r.stderr.contains("koalabooth keys create NAME"), r.stderr)
        XCTAssertFalse(r.stdout.contains("listening"), r.stdout)
        // A revoked key does not count.
        try kb("keys", "create", "old")
        try kb("keys", "revoke", "old")
        try assertRefused("serve", "--host", "0.0.0.0", "--port", "0", says: "refusing to listen")
    }

    func testServeOptionErrors() throws {
        try assertRefused("serve", "--port", "0", "--model", "tiny", says: "--model takes NAME=DIR")
        try assertRefused("serve", "--port", "0", "--model", "tiny=\(dir.appendingPathComponent("missing").path)", says: "--model")
        try assertRefused("serve", "--port", "0", "--model", "bad name=\(CLI.tinyModel)", says: "invalid model name 'bad name'")
    }

    /// `serve --port 0` prints the URL with the port it got, answers there, and stops on SIGINT.
    func testServePrintsItsURLAndAnswers() throws {
        let secret = try kb("keys", "create", "test").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let p = Process()
        p.executableURL = CLI.executable
        p.arguments = ["serve", "--port", "0", "--home", home.path, "--model", "tiny=\(CLI.tinyModel)"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }

        // The first line, within 60 s.
        let deadline = Date().addingTimeInterval(60)
        var text = ""
        let handle = out.fileHandleForReading
        let reader = DispatchQueue(label: "serve-stdout")
        let lineRead = DispatchSemaphore(value: 0)
        final class Box: @unchecked Sendable { var text = "" }
        let box = Box()
        reader.async {
            while !box.text.contains("\n") {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                box.text += String(decoding: chunk, as: UTF8.self)
            }
            lineRead.signal()
        }
        XCTAssertEqual(lineRead.wait(timeout: .now() + deadline.timeIntervalSinceNow), .success, "no URL printed")
        text = box.text
        let line = try XCTUnwrap(text.split(separator: "\n").first.map(String.init))
        XCTAssertTrue(line.hasPrefix("listening on http://127.0.0.1:"), line)
        let url = try XCTUnwrap(URL(string: String(line.dropFirst("listening on ".count))))
        XCTAssertNotEqual(url.port, 0)

        var request = URLRequest(url: url.appendingPathComponent("v1/models"), timeoutInterval: 30)
        request.setValue("Bearer \(secret)", forHTTPHeaderField: "Authorization")
        let answered = DispatchSemaphore(value: 0)
        final class Answer: @unchecked Sendable { var status = 0; var body = Data() }
        let answer = Answer()
        URLSession.shared.dataTask(with: request) { data, response, _ in
            answer.status = (response as? HTTPURLResponse)?.statusCode ?? 0
            answer.body = data ?? Data()
            answered.signal()
        }.resume()
        XCTAssertEqual(answered.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(answer.status, 200)
        XCTAssertTrue(String(decoding: answer.body, as: UTF8.self).contains("\"name\":\"tiny\""))

        kill(p.processIdentifier, SIGINT)
        let stopped = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { p.waitUntilExit(); stopped.signal() }
        XCTAssertEqual(stopped.wait(timeout: .now() + 30), .success, "SIGINT stops the server")
        XCTAssertEqual(p.terminationStatus, 0)
    }
}
