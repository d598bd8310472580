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
        let duplicate = try kb("keys", "create", "APP")
        XCTAssertNotEqual(duplicate.status, 0)
        XCTAssertTrue(duplicate.stderr.contains("an API key named APP already exists"), duplicate.stderr)
        let invalid = try kb("keys", "create", "my app")
        XCTAssertNotEqual(invalid.status, 0)
        XCTAssertTrue(invalid.stderr.contains("invalid API key name 'my app'"), invalid.stderr)
        let unknown = try kb("keys", "revoke", "nobody")
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("no API key named nobody"), unknown.stderr)
        let empty = try CLI.run(["keys", "list", "--home", dir.appendingPathComponent("fresh").path])
        XCTAssertEqual(empty.status, 0)
        XCTAssertTrue(empty.stdout.contains("koalabooth keys create NAME"), empty.stdout)
    }

    func testServeRefusesAPublicAddressWithoutAKey() throws {
        let r = try kb("serve", "--host", "0.0.0.0", "--port", "0")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("refusing to listen on 0.0.0.0"), r.stderr)
        XCTAssertTrue(r.stderr.contains("koalabooth keys create NAME"), r.stderr)
        XCTAssertFalse(r.stdout.contains("listening"), r.stdout)
        // A revoked key does not count.
        try kb("keys", "create", "old")
        try kb("keys", "revoke", "old")
        let again = try kb("serve", "--host", "0.0.0.0", "--port", "0")
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("refusing to listen"), again.stderr)
    }

    func testServeOptionErrors() throws {
        let model = try kb("serve", "--port", "0", "--model", "tiny")
        XCTAssertNotEqual(model.status, 0)
        XCTAssertTrue(model.stderr.contains("--model takes NAME=DIR"), model.stderr)
        let folder = try kb("serve", "--port", "0", "--model", "tiny=\(dir.appendingPathComponent("missing").path)")
        XCTAssertNotEqual(folder.status, 0)
        XCTAssertTrue(folder.stderr.contains("--model"), folder.stderr)
        let name = try kb("serve", "--port", "0", "--model", "bad name=\(CLI.tinyModel)")
        XCTAssertNotEqual(name.status, 0)
        XCTAssertTrue(name.stderr.contains("invalid model name 'bad name'"), name.stderr)
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
