import Foundation
import XCTest

/// An `unusable_photos` error names each bad file by its position and name, so a client
/// (the web UI) shows each problem beside its photo.
final class PhotoProblemAPITests: ServerTestCase {
    func testUnusablePhotosAreNamedByPart() async throws {
        let form: [FormPart] = [.field("name", "rex"), .field("class", "dog")] + (try photoParts(1))
            + [.file(field: "photos", filename: "notes.txt", bytes: Data("hello".utf8))]
            + (try photoParts(1, from: 1))
            + [.file(field: "photos", filename: "tiny.png", bytes: try photo(seed: 7, png: true, width: 64, height: 64))]
        let r = try await post("/v1/subjects", key: keyA, form: form)
        XCTAssertEqual(r.status, 400, r.text)
        XCTAssertEqual(r.errorCode, "unusable_photos")
        let photos = try XCTUnwrap((r.json["error"] as? [String: Any])?["photos"] as? [[String: Any]], r.text)
        XCTAssertEqual(photos.map { $0["index"] as? Int }, [1, 3])
        XCTAssertEqual(photos.map { $0["file"] as? String }, ["notes.txt", "tiny.png"])
        XCTAssertTrue((photos.first?["message"] as? String)?.hasPrefix("not a JPEG or PNG image") == true, r.text)
        XCTAssertTrue((photos.last?["message"] as? String)?.hasPrefix("the image is 64x64 pixels") == true, r.text)
        for p in photos { XCTAssertFalse("\(p)".contains(home.path), "no server path in \(p)") }

        // Adding photos to a subject says the same.
        let id = try await createSubject("rex", key: keyA)
        let added = try await post("/v1/subjects/\(id)/photos", key: keyA,
                                   form: [.file(field: "photos", filename: "notes.txt", bytes: Data("x".utf8))])
        XCTAssertEqual(((added.json["error"] as? [String: Any])?["photos"] as? [[String: Any]])?.first?["file"] as? String, "notes.txt", added.text)

        // Other errors carry no photos list.
        let few = try await post("/v1/subjects", key: keyA, form: [.field("name", "max"), .field("class", "dog")] + (try photoParts(2)))
        XCTAssertEqual(few.errorCode, "too_few_photos")
        XCTAssertNil((few.json["error"] as? [String: Any])?["photos"])
    }
}
