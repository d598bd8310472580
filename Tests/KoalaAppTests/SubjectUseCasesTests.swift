import Foundation
import KoalaApp
import KoalaStore
import XCTest

/// Subject creation through the application layer: bad input is refused whole, before
/// anything is stored (no database, no copied photo).
final class SubjectUseCasesTests: AppTestCase {
    /// Nothing at all in the data directory: the refusals come before the store is opened.
    func assertNothingStored(file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(SubjectStore.databaseExists(at: location.home), "no database may be made", file: file, line: line)
        XCTAssertEqual(try subjects.list().count, 0, file: file, line: line)
    }

    func testBadInputIsRefusedAndNothingIsStored() throws {
        let good = try photos(3)
        var s = newSubject(photos: good)
        s.token = "dog"
        XCTAssertThrowsError(try subjects.create(s)) { XCTAssertEqual($0 as? SubjectError, .tokenInClassNoun(token: "dog", classNoun: "dog")) }
        s.token = "the"
        XCTAssertThrowsError(try subjects.create(s)) { XCTAssertEqual($0 as? SubjectError, .commonWordToken(token: "the")) }
        s.token = "sks"
        s.name = "no spaces"
        XCTAssertThrowsError(try subjects.create(s)) { guard case .invalidName = $0 as? StoreError else { return XCTFail("\($0)") } }

        XCTAssertThrowsError(try subjects.create(newSubject(photos: Array(good.prefix(2))))) {
            XCTAssertEqual($0 as? SubjectError, .tooFewPhotos(given: 2, classNoun: "dog"))
        }
        // Copies of one picture are not three photos.
        let copies = (0..<3).map { root.appendingPathComponent("copy\($0).png").path }
        for c in copies { try FileManager.default.copyItem(atPath: good[0], toPath: c) }
        XCTAssertThrowsError(try subjects.create(newSubject(photos: copies))) {
            XCTAssertEqual($0 as? SubjectError, .tooFewDistinctPhotos(given: 3, distinct: 1))
        }
        // One broken file among good ones: all problems at once, naming the file.
        let broken = root.appendingPathComponent("broken.jpg").path
        try Data("not a picture".utf8).write(to: URL(fileURLWithPath: broken))
        XCTAssertThrowsError(try subjects.create(newSubject(photos: good + [broken]))) {
            guard case .unusablePhotos(let problems) = $0 as? SubjectError else { return XCTFail("\($0)") }
            XCTAssertEqual(problems.count, 1)
            XCTAssertTrue(problems[0].contains(broken), problems[0])
        }
        // Too small for the asked minimum side.
        var strict = newSubject(photos: good)
        strict.minimumSide = 64
        XCTAssertThrowsError(try subjects.create(strict)) {
            guard case .unusablePhotos(let problems) = $0 as? SubjectError else { return XCTFail("\($0)") }
            XCTAssertEqual(problems.count, 3)
        }
        try assertNothingStored()
    }

    func testCreateAddRemoveRenameDelete() throws {
        var s = newSubject(photos: try photos(3))
        s.token = "the"
        s.allowCommonWord = true
        var notices: [SubjectNotice] = []
        let created = try subjects.create(s) { notices.append($0) }
        XCTAssertEqual(notices, [.commonWordToken("the")])
        XCTAssertEqual(created.photos.count, 3)
        XCTAssertEqual(created.home.path, location.home.path)

        // A new photo and one the subject already has.
        let extra = try photos(1, prefix: "extra")[0]
        notices = []
        let added = try subjects.addPhotos([extra, s.photoPaths[0]], to: "rex", minimumSide: 16) { notices.append($0) }
        XCTAssertEqual(added.added.count, 1)
        XCTAssertEqual(added.total, 4)
        guard case .skippedKnownPhoto(let subject, let source, _) = notices.first, notices.count == 1 else { return XCTFail("\(notices)") }
        XCTAssertEqual(subject, "rex")
        XCTAssertEqual(source, s.photoPaths[0])

        let removed = try subjects.removePhoto(of: "rex", matching: "extra0.png")
        XCTAssertEqual(removed.remaining, 3)
        XCTAssertThrowsError(try subjects.removePhoto(of: "rex", matching: "p0.png")) {
            XCTAssertEqual($0 as? SubjectError, .removalBelowMinimum(subject: "rex", remaining: 2))
        }
        XCTAssertEqual(try subjects.show("rex", generations: 5).detail.photos.count, 3, "a refused removal removes nothing")

        XCTAssertEqual(try subjects.rename("rex", to: "max").name, "max")
        let preview = try subjects.deletionPreview("max")
        XCTAssertEqual([preview.photos, preview.runs, preview.generations], [3, 0, 0])
        XCTAssertEqual(try subjects.delete("max").name, "max")
        XCTAssertEqual(try subjects.list().count, 0)
        XCTAssertThrowsError(try subjects.show("max", generations: 1)) { XCTAssertEqual($0 as? StoreError, .unknownSubject(name: "max")) }
    }

    func testLookupsWithoutADataDirectoryCreateNothing() throws {
        XCTAssertEqual(try subjects.list().count, 0)
        XCTAssertThrowsError(try subjects.addPhotos(try photos(1), to: "rex")) { XCTAssertEqual($0 as? StoreError, .unknownSubject(name: "rex")) }
        XCTAssertThrowsError(try subjects.delete("rex")) { XCTAssertEqual($0 as? StoreError, .unknownSubject(name: "rex")) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: location.home.path))
    }
}
