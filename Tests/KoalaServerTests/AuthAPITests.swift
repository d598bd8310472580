import Foundation
import KoalaApp
import KoalaStore
import XCTest

/// Bearer auth on every route, and key isolation: a key reaches only its own subjects,
/// and anything else is the same 404 as a subject that does not exist.
final class AuthAPITests: ServerTestCase {
    func testEveryRouteNeedsAValidKey() async throws {
        let id = try await createSubject("rex", key: keyA)
        let revoked = try APIKeyUseCases(location: location).create(name: "old").secret
        try APIKeyUseCases(location: location).revoke(name: "old")
        let routes: [(String, String)] = [
            ("GET", "/v1/openapi.json"), ("GET", "/v1/models"), ("GET", "/v1/subjects"), ("POST", "/v1/subjects"),
            ("GET", "/v1/subjects/\(id)"), ("PATCH", "/v1/subjects/\(id)"), ("DELETE", "/v1/subjects/\(id)"),
            ("POST", "/v1/subjects/\(id)/photos"), ("DELETE", "/v1/subjects/\(id)/photos/1"),
            ("GET", "/v1/subjects/\(id)/photos/1/image"), ("GET", "/v1/no-such-route"),
        ]
        let credentials: [(String, [String: String])] = [
            ("no header", [:]),
            ("not bearer", ["Authorization": "Basic YWxpY2U6c2VjcmV0"]),
            ("empty bearer", ["Authorization": "Bearer "]),
            ("unknown key", ["Authorization": "Bearer kb_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]),
            ("revoked key", ["Authorization": "Bearer \(revoked)"]),
            ("key without prefix", ["Authorization": "Bearer \(keyA!.dropFirst(3))"]),
        ]
        for (method, path) in routes {
            for (what, headers) in credentials {
                let r = try await request(method, path, key: nil, headers: headers)
                XCTAssertEqual(r.status, 401, "\(method) \(path), \(what)")
                XCTAssertEqual(r.errorCode, "unauthorized", "\(method) \(path), \(what)")
                XCTAssertTrue(r.header("WWW-Authenticate")?.hasPrefix("Bearer realm=\"koalabooth\"") == true, "\(method) \(path), \(what)")
            }
        }
        // Nothing was changed by any of them.
        XCTAssertEqual(try SubjectStore(home: home).subject(id: id)?.name, "rex")
        // The scheme is case-insensitive.
        let lower = try await request("GET", "/v1/subjects", key: nil, headers: ["Authorization": "bearer \(keyA!)"])
        XCTAssertEqual(lower.status, 200)
    }

    func testKeyBCannotReachKeyAsSubject() async throws {
        let id = try await createSubject("rex", key: keyA)
        let photoID = try await firstPhotoID(ofSubject: id, key: keyA)
        let before = try storeState()

        let list = try await get("/v1/subjects", key: keyB)
        XCTAssertEqual(list.status, 200)
        XCTAssertEqual((list.json["subjects"] as? [Any])?.count, 0, "B lists none of A's subjects")

        let missing = try await get("/v1/subjects/424242", key: keyB)
        let attempts: [(String, HTTPResult)] = [
            ("read", try await get("/v1/subjects/\(id)", key: keyB)),
            ("rename", try await patch("/v1/subjects/\(id)", key: keyB, json: ["name": "stolen"])),
            ("add photos", try await post("/v1/subjects/\(id)/photos", key: keyB, form: try photoParts(1, from: 7))),
            ("remove a photo", try await delete("/v1/subjects/\(id)/photos/\(photoID)?allow_below_minimum=true", key: keyB)),
            ("read a photo", try await get("/v1/subjects/\(id)/photos/\(photoID)/image", key: keyB)),
            ("delete", try await delete("/v1/subjects/\(id)", key: keyB)),
        ]
        for (what, r) in attempts {
            XCTAssertEqual(r.status, 404, "B may not \(what): \(r.text)")
            XCTAssertEqual(r.errorCode, "subject_not_found", what)
            // The same answer as for an id that does not exist: nothing tells them apart.
            XCTAssertEqual(r.errorMessage, missing.errorMessage.replacingOccurrences(of: "424242", with: "\(id)"), what)
        }
        XCTAssertEqual(try storeState(), before, "B changed nothing")
        let stillThere = try await get("/v1/subjects/\(id)", key: keyA)
        XCTAssertEqual(stillThere.json["name"] as? String, "rex")
        XCTAssertEqual((stillThere.json["photos"] as? [Any])?.count, 3)
    }

    func testSubjectsMadeOnTheCommandLineAreNotReachable() async throws {
        let cli = SubjectUseCases(location: location)
        let dir = root.appendingPathComponent("cli-photos")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let paths = try (0..<3).map { i -> String in
            let path = dir.appendingPathComponent("c\(i).jpg").path
            try photo(seed: 20 + i).write(to: URL(fileURLWithPath: path))
            return path
        }
        let created = try cli.create(SubjectUseCases.NewSubject(name: "local", classNoun: "cat", photoPaths: paths))
        let id = created.subject.id!
        for key in [keyA!, keyB!] {
            let list = try await get("/v1/subjects", key: key)
            XCTAssertEqual((list.json["subjects"] as? [Any])?.count, 0)
            let read = try await get("/v1/subjects/\(id)", key: key)
            XCTAssertEqual(read.status, 404)
            let deleted = try await delete("/v1/subjects/\(id)", key: key)
            XCTAssertEqual(deleted.status, 404)
        }
        XCTAssertNotNil(try SubjectStore(home: home).subject(id: id))
    }

    func testRevokingAKeyLocksItOutAtOnce() async throws {
        let id = try await createSubject("rex", key: keyA)
        let before = try await get("/v1/subjects/\(id)", key: keyA)
        XCTAssertEqual(before.status, 200)
        try APIKeyUseCases(location: location).revoke(name: "alice")
        let r = try await get("/v1/subjects/\(id)", key: keyA)
        XCTAssertEqual(r.status, 401)
        XCTAssertTrue(r.header("WWW-Authenticate")?.contains("invalid_token") == true)
        // The subject stays, out of every key's reach.
        let other = try await get("/v1/subjects/\(id)", key: keyB)
        XCTAssertEqual(other.status, 404)
        XCTAssertNotNil(try SubjectStore(home: home).subject(id: id))
    }
}
