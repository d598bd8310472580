import Foundation
import KoalaServer
import KoalaStore
import XCTest

/// Every subject endpoint over HTTP, and each way a request can be refused.
final class SubjectAPITests: ServerTestCase {
    func testCreateListShowRenameDelete() async throws {
        let r = try await post("/v1/subjects", key: keyA, form: [.field("name", "rex"), .field("class", "dog"), .field("token", "zwx"),
                                                                .field("notes", "the good boy")] + (try photoParts(3)))
        XCTAssertEqual(r.status, 201, r.text)
        XCTAssertEqual(r.header("Content-Type"), "application/json")
        let subject = try XCTUnwrap(r.json["subject"] as? [String: Any])
        XCTAssertEqual(subject["name"] as? String, "rex")
        XCTAssertEqual(subject["class"] as? String, "dog")
        XCTAssertEqual(subject["token"] as? String, "zwx")
        XCTAssertEqual(subject["notes"] as? String, "the good boy")
        XCTAssertEqual(subject["photo_count"] as? Int, 3)
        let photos = try XCTUnwrap(subject["photos"] as? [[String: Any]])
        XCTAssertEqual(photos.map { $0["original_name"] as? String }, ["p0.jpg", "p1.png", "p2.jpg"])
        XCTAssertEqual(photos.first?["width"] as? Int, 288)
        let id = try XCTUnwrap((subject["id"] as? NSNumber)?.int64Value)

        let list = try await get("/v1/subjects", key: keyA)
        XCTAssertEqual(list.status, 200)
        let listed = try XCTUnwrap(list.json["subjects"] as? [[String: Any]])
        XCTAssertEqual(listed.map { $0["name"] as? String }, ["rex"])
        XCTAssertNil(listed[0]["photos"], "listings leave photos out")

        let shown = try await get("/v1/subjects/\(id)", key: keyA)
        XCTAssertEqual(shown.status, 200)
        XCTAssertEqual(shown.json["name"] as? String, "rex")
        XCTAssertEqual((shown.json["photos"] as? [Any])?.count, 3)

        let renamed = try await patch("/v1/subjects/\(id)", key: keyA, json: ["name": "rexy"])
        XCTAssertEqual(renamed.status, 200, renamed.text)
        XCTAssertEqual(renamed.json["name"] as? String, "rexy")
        XCTAssertEqual(try SubjectStore(home: home).subject(id: id)?.name, "rexy")

        let deleted = try await delete("/v1/subjects/\(id)", key: keyA)
        XCTAssertEqual(deleted.status, 204)
        XCTAssertNil(try SubjectStore(home: home).subject(id: id))
        XCTAssertFalse(FileManager.default.fileExists(atPath: home.appendingPathComponent("subjects/\(id)").path))
        let gone = try await get("/v1/subjects/\(id)", key: keyA)
        XCTAssertEqual(gone.status, 404)
        XCTAssertEqual(gone.errorCode, "subject_not_found")
    }

    func testPhotosAddRemoveAndImage() async throws {
        let id = try await createSubject("rex", key: keyA)
        let added = try await post("/v1/subjects/\(id)/photos", key: keyA, form: try photoParts(2, from: 3) + (try photoParts(1)))
        XCTAssertEqual(added.status, 200, added.text)
        XCTAssertEqual((added.json["added"] as? [Any])?.count, 2)
        XCTAssertEqual(added.json["total"] as? Int, 5)
        let notices = try XCTUnwrap(added.json["notices"] as? [[String: Any]])
        XCTAssertEqual(notices.map { $0["code"] as? String }, ["skipped_known_photo"], "p0 is already there")

        let shown = try await get("/v1/subjects/\(id)", key: keyA)
        let photos = try XCTUnwrap(shown.json["photos"] as? [[String: Any]])
        let first = try XCTUnwrap(photos.first)
        let photoID = try XCTUnwrap((first["id"] as? NSNumber)?.int64Value)
        let image = try await get("/v1/subjects/\(id)/photos/\(photoID)/image", key: keyA)
        XCTAssertEqual(image.status, 200)
        XCTAssertEqual(image.header("Content-Type"), "image/jpeg")
        XCTAssertEqual(image.body, try photo(seed: 0), "the stored bytes are the uploaded ones")
        let png = try XCTUnwrap(photos.first { $0["original_name"] as? String == "p1.png" })
        let pngImage = try await get("/v1/subjects/\(id)/photos/\((png["id"] as! NSNumber).int64Value)/image", key: keyA)
        XCTAssertEqual(pngImage.header("Content-Type"), "image/png")

        let removed = try await delete("/v1/subjects/\(id)/photos/\(photoID)", key: keyA)
        XCTAssertEqual(removed.status, 204, removed.text)
        XCTAssertEqual(try SubjectStore(home: home).photos(subjectID: id).count, 4)
        let again = try await delete("/v1/subjects/\(id)/photos/\(photoID)", key: keyA)
        XCTAssertEqual(again.status, 404)
        XCTAssertEqual(again.errorCode, "photo_not_found")
        let noImage = try await get("/v1/subjects/\(id)/photos/\(photoID)/image", key: keyA)
        XCTAssertEqual(noImage.status, 404)
    }

    func testRemovalBelowMinimumNeedsTheFlag() async throws {
        let id = try await createSubject("rex", key: keyA)
        let photoID = try await firstPhotoID(ofSubject: id, key: keyA)
        let refused = try await delete("/v1/subjects/\(id)/photos/\(photoID)", key: keyA)
        XCTAssertEqual(refused.status, 409)
        XCTAssertEqual(refused.errorCode, "below_minimum")
        XCTAssertTrue(refused.errorMessage.contains("fewer than the 3"), refused.errorMessage)
        XCTAssertEqual(try SubjectStore(home: home).photos(subjectID: id).count, 3)
        let bad = try await delete("/v1/subjects/\(id)/photos/\(photoID)?allow_below_minimum=maybe", key: keyA)
        XCTAssertEqual(bad.status, 400)
        XCTAssertEqual(bad.errorCode, "invalid_field")
        let allowed = try await delete("/v1/subjects/\(id)/photos/\(photoID)?allow_below_minimum=true", key: keyA)
        XCTAssertEqual(allowed.status, 204)
        XCTAssertEqual(try SubjectStore(home: home).photos(subjectID: id).count, 2)
    }

    /// Each refusal of `subject create`, as a 4xx with the use case's message and
    /// nothing stored.
    func testCreateValidationStoresNothing() async throws {
        try await createSubject("taken", key: keyA)
        let before = try storeState()
        let corrupt = try photo(seed: 9).prefix(5000)
        let cases: [(form: [FormPart], status: Int, code: String, mentions: String)] = [
            ([.field("name", "rex"), .field("class", "dog")] + (try photoParts(2)), 400, "too_few_photos", "at least 3 photos, got 2"),
            ([.field("name", "rex"), .field("class", "dog")] + (try photoParts(2)) + [.file(field: "photos", filename: "copy.jpg", bytes: try photo(seed: 0))],
             400, "too_few_photos", "only 2 different pictures"),
            ([.field("name", "rex"), .field("class", "dog")] + (try photoParts(2)) + [.file(field: "photos", filename: "broken.jpg", bytes: Data(corrupt))],
             400, "unusable_photos", "broken.jpg: the JPEG"),
            ([.field("name", "rex"), .field("class", "dog")] + (try photoParts(2)) + [.file(field: "photos", filename: "notes.txt", bytes: Data("hello, world".utf8))],
             400, "unusable_photos", "notes.txt: not a JPEG or PNG image"),
            ([.field("name", "rex"), .field("class", "dog")] + (try photoParts(2)) + [.file(field: "photos", filename: "tiny.png", bytes: try photo(seed: 7, png: true, width: 64, height: 64))],
             400, "unusable_photos", "tiny.png: the image is 64x64 pixels, smaller than the minimum 256"),
            ([.field("name", "TAKEN"), .field("class", "dog")] + (try photoParts(3)), 409, "duplicate_name", "a subject named TAKEN already exists"),
            ([.field("name", "rex"), .field("class", "dog"), .field("token", "two words")] + (try photoParts(3)), 400, "invalid_token", "it is more than one word"),
            ([.field("name", "rex"), .field("class", "dog"), .field("token", "dog")] + (try photoParts(3)), 400, "invalid_token", "part of the class noun"),
            ([.field("name", "rex"), .field("class", "dog"), .field("token", "house")] + (try photoParts(3)), 400, "invalid_token", "common English word"),
            ([.field("name", "-rex"), .field("class", "dog")] + (try photoParts(3)), 400, "invalid_name", "invalid subject name '-rex'"),
            ([.field("name", "rex"), .field("class", "dog!")] + (try photoParts(3)), 400, "invalid_class", "invalid class noun"),
            ([.field("class", "dog")] + (try photoParts(3)), 400, "missing_field", "name is missing"),
            ([.field("name", "rex")] + (try photoParts(3)), 400, "missing_field", "class is missing"),
            ([.field("name", "rex"), .field("class", "dog"), .field("colour", "brown")] + (try photoParts(3)), 400, "invalid_form", "unknown form field colour"),
            ([.field("name", "rex"), .field("class", "dog"), .file(field: "avatar", filename: "a.jpg", bytes: try photo(seed: 1))] + (try photoParts(3)),
             400, "invalid_form", "avatar"),
        ]
        for (form, status, code, mentions) in cases {
            let r = try await post("/v1/subjects", key: keyA, form: form)
            XCTAssertEqual(r.status, status, "\(code): \(r.text)")
            XCTAssertEqual(r.errorCode, code, r.text)
            XCTAssertTrue(r.errorMessage.contains(mentions), "\(code): \(r.errorMessage)")
            XCTAssertFalse(r.errorMessage.contains(home.path), "no server path in \(r.errorMessage)")
            XCTAssertFalse(r.errorMessage.contains("--"), "no CLI flag in \(r.errorMessage)")
        }
        XCTAssertEqual(try storeState(), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("tmp").path), [], "uploads are cleaned up")

        // Not a form at all.
        let json = try await request("POST", "/v1/subjects", key: keyA, body: Data("{}".utf8), contentType: "application/json")
        XCTAssertEqual(json.status, 400)
        XCTAssertEqual(json.errorCode, "invalid_form")
        // The common word is accepted when asked for, with a notice.
        let allowed = try await post("/v1/subjects", key: keyA, form: [.field("name", "rex"), .field("class", "dog"), .field("token", "house"),
                                                                      .field("allow_common_word", "true")] + (try photoParts(3)))
        XCTAssertEqual(allowed.status, 201, allowed.text)
        XCTAssertEqual((allowed.json["notices"] as? [[String: Any]])?.first?["code"] as? String, "common_word_token")
    }

    func testAddPhotosValidationStoresNothing() async throws {
        let id = try await createSubject("rex", key: keyA)
        let before = try storeState()
        let bad = try await post("/v1/subjects/\(id)/photos", key: keyA,
                                 form: try photoParts(1, from: 5) + [.file(field: "photos", filename: "notes.txt", bytes: Data("text".utf8))])
        XCTAssertEqual(bad.status, 400)
        XCTAssertEqual(bad.errorCode, "unusable_photos")
        XCTAssertTrue(bad.errorMessage.contains("notes.txt: "), bad.errorMessage)
        let none = try await post("/v1/subjects/\(id)/photos", key: keyA, form: [])
        XCTAssertEqual(none.status, 400)
        XCTAssertEqual(none.errorCode, "missing_field")
        let field = try await post("/v1/subjects/\(id)/photos", key: keyA, form: [.field("name", "x")] + (try photoParts(1, from: 5)))
        XCTAssertEqual(field.status, 400)
        XCTAssertEqual(field.errorCode, "invalid_form")
        XCTAssertEqual(try storeState(), before)
    }

    func testRenameRefusals() async throws {
        let id = try await createSubject("rex", key: keyA)
        try await createSubject("fido", key: keyA)
        let taken = try await patch("/v1/subjects/\(id)", key: keyA, json: ["name": "FIDO"])
        XCTAssertEqual(taken.status, 409)
        XCTAssertEqual(taken.errorCode, "duplicate_name")
        let invalid = try await patch("/v1/subjects/\(id)", key: keyA, json: ["name": "no spaces"])
        XCTAssertEqual(invalid.status, 400)
        XCTAssertEqual(invalid.errorCode, "invalid_name")
        let empty = try await patch("/v1/subjects/\(id)", key: keyA, json: [String: String]())
        XCTAssertEqual(empty.status, 400)
        XCTAssertEqual(empty.errorCode, "invalid_body")
        let notJSON = try await request("PATCH", "/v1/subjects/\(id)", key: keyA, body: Data("name=x".utf8), contentType: "text/plain")
        XCTAssertEqual(notJSON.status, 400)
        XCTAssertEqual(notJSON.errorCode, "invalid_body")
        XCTAssertEqual(try SubjectStore(home: home).subject(id: id)?.name, "rex")
    }

    func testUnknownIDsAndRoutes() async throws {
        for path in ["/v1/subjects/999", "/v1/subjects/abc", "/v1/subjects/999/photos/1/image"] {
            let r = try await get(path, key: keyA)
            XCTAssertEqual(r.status, 404, path)
            XCTAssertEqual(r.errorCode, "subject_not_found", path)
        }
        let id = try await createSubject("rex", key: keyA)
        let photo = try await get("/v1/subjects/\(id)/photos/999/image", key: keyA)
        XCTAssertEqual(photo.status, 404)
        XCTAssertEqual(photo.errorCode, "photo_not_found")
        let route = try await get("/v1/nothing-here", key: keyA)
        XCTAssertEqual(route.status, 404)
        XCTAssertEqual(route.errorCode, "not_found")
    }

    func testModels() async throws {
        let r = try await get("/v1/models", key: keyA)
        XCTAssertEqual(r.status, 200)
        let models = try XCTUnwrap(r.json["models"] as? [[String: Any]])
        XCTAssertEqual(models.map { $0["name"] as? String }, ["tiny"])
        XCTAssertEqual(models.first?["pipeline_class"] as? String, "StableDiffusionXLPipeline")
        XCTAssertFalse(r.text.contains("/"), "no path reaches the client: \(r.text)")
    }
}

/// The body limit: a stranger cannot make the server hold more than it allows.
final class BodyLimitAPITests: ServerTestCase {
    override func configure(_ config: inout ServerConfiguration) { config.maxBodyBytes = 1 << 20 }

    func testBodiesOverTheLimitAre413() async throws {
        let (body, type) = multipart([.field("name", "rex"), .field("class", "dog"), .file(field: "photos", filename: "big.jpg", bytes: Data(count: 2 << 20))])
        let r = try await request("POST", "/v1/subjects", key: keyA, body: body, contentType: type)
        XCTAssertEqual(r.status, 413)
        XCTAssertEqual(r.errorCode, "body_too_large")
        XCTAssertTrue(r.errorMessage.contains("\(1 << 20) bytes"), r.errorMessage)
        XCTAssertEqual(try SubjectStore(home: home).subjects().count, 0)
        // Under the limit the same server works.
        let ok = try await post("/v1/subjects", key: keyA, form: [.field("name", "rex"), .field("class", "dog")] + (try photoParts(3)))
        XCTAssertEqual(ok.status, 201, ok.text)
    }

    func testAMethodThePathLacksIs405WithAllow() async throws {
        let id = try await createSubject("rex", key: keyA)
        let trace = try await request("TRACE", "/v1/subjects", key: keyA)
        XCTAssertEqual(trace.status, 405, trace.text)
        XCTAssertEqual(trace.errorCode, "method_not_allowed")
        XCTAssertEqual(trace.header("Allow"), "POST, GET")
        let put = try await request("PUT", "/v1/subjects/\(id)", key: keyA)
        XCTAssertEqual(put.status, 405)
        XCTAssertEqual(put.header("Allow"), "GET, PATCH, DELETE")
        let query = try await request("QUERY", "/v1/models", key: keyA)
        XCTAssertEqual(query.status, 405, "any method, not only those HTTP/1.1 names")
        XCTAssertEqual(query.header("Allow"), "GET")
        let unknown = try await request("PUT", "/v1/no-such-route", key: keyA)
        XCTAssertEqual(unknown.status, 404)
        let anonymous = try await request("PUT", "/v1/subjects", key: nil)
        XCTAssertEqual(anonymous.status, 401, "auth comes first")
    }
}
