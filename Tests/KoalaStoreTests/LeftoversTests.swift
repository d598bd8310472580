import Foundation
@testable import KoalaStore
import KoalaTestSupport
import XCTest

/// What killed processes leave behind is cleaned up at the next start, and only that:
/// entries of running processes stay (issue 13, item 10).
final class LeftoversTests: StoreTestCase {

    /// A process started and waited for: its pid is dead.
    func deadPID() throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }

    /// A process that lives until the test ends.
    func livingProcess() throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sleep")
        p.arguments = ["60"]
        try p.run()
        addTeardownBlock { p.terminate(); p.waitUntilExit() }
        return p
    }

    func write(_ relative: String, age: TimeInterval = 0) throws -> URL {
        let url = home.appendingPathComponent(relative)
        try writeFile(Data(repeating: 7, count: 100), to: url)
        if age > 0 { try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-age)], ofItemAtPath: url.path) }
        return url
    }

    func exists(_ relative: String) -> Bool { FileManager.default.fileExists(atPath: home.appendingPathComponent(relative).path) }

    func testNamesCarryTheirWritersPID() {
        XCTAssertEqual(Leftovers.writerPID(".dat.nosync1C93.vIyFOj"), 0x1C93)
        XCTAssertEqual(Leftovers.writerPID("lora-step000010.safetensors.tmp-4711"), 4711)
        XCTAssertEqual(Leftovers.writerPID(".unet-step000010.partial-99"), 99)
        XCTAssertEqual(Leftovers.writerPID("stage-123-6F9619FF-8B86-D011-B42D-00C04FC964FF"), 123)
        XCTAssertEqual(Leftovers.writerPID(".write-probe-5"), 5)
        for name in ["lora-step000010.safetensors", "state-step000010.json", "class-00001.png", "stage-6F9619FF-8B86", "x.tmp-abc"] {
            XCTAssertNil(Leftovers.writerPID(name), name)
        }
    }

    func testStartRemovesWhatEndedProcessesLeftAndKeepsTheRest() throws {
        let store = try SubjectStore(home: home)
        let (rex, _) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try photos())
        let dead = try deadPID(), alive = try livingProcess().processIdentifier
        let hexDead = String(dead, radix: 16, uppercase: true), hexAlive = String(alive, radix: 16, uppercase: true)
        let run = "subjects/\(rex.id!)/runs/1"
        let gone = [
            "tmp/stage-\(dead)-\(UUID().uuidString)/0",  // a killed `subject create`
            "\(run)/.dat.nosync\(hexDead).AbC123",  // a killed atomic write
            "\(run)/lora-step000010.safetensors.tmp-\(dead)",
            "\(run)/.unet-step000010.partial-\(dead)/config.json",
            "\(run)/validation/.dat.nosync\(hexAlive).Old123",  // pid reused by a process started after the write
            ".write-probe-\(dead)",
        ]
        let kept = [
            "tmp/stage-\(alive)-\(UUID().uuidString)/0",  // a `subject create` still running
            "\(run)/.dat.nosync\(hexAlive).New123",
            "\(run)/lora-step000020.safetensors.tmp-\(getpid())",
            "tmp/stage-6F9619FF-8B86-D011-B42D-00C04FC964FF/0",  // no pid (older versions): not judged
        ]
        for path in gone { _ = try write(path, age: path.contains("Old123") ? 3600 : 0) }
        for path in kept { _ = try write(path) }

        let found = Leftovers.find(in: store)
        XCTAssertEqual(Set(found.abandoned.map(\.relativePath)),
                       Set(gone.map { $0.hasSuffix("/0") || $0.hasSuffix("/config.json") ? ($0 as NSString).deletingLastPathComponent : $0 }))
        XCTAssertEqual(try store.checkHealth().orphans, [], "temporary entries are leftovers, not orphans")

        _ = try SubjectStore(home: home, removeLeftovers: false)
        for path in gone { XCTAssertTrue(exists(path), "removeLeftovers: false must keep \(path)") }
        _ = try SubjectStore(home: home)
        for path in gone { XCTAssertFalse(exists(path), path) }
        for path in kept { XCTAssertTrue(exists(path), path) }
        XCTAssertFalse(exists("\(run)/.unet-step000010.partial-\(dead)"))
    }

    /// A delete killed before its commit left the subject's folder in tmp/trash-…:
    /// its rows still exist, so the next start puts it back. A committed delete's
    /// trash is removed.
    func testInterruptedDeleteIsPutBackAndFinishedOneRemoved() throws {
        let store = try SubjectStore(home: home)
        let (rex, _) = try store.createSubject(name: "rex", token: "sks", classNoun: "dog", photos: try photos())
        let dead = try deadPID()
        let folder = "subjects/\(rex.id!)"
        let trash = home.appendingPathComponent("tmp/trash-\(dead)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: trash, withIntermediateDirectories: true)
        try FileManager.default.moveItem(at: home.appendingPathComponent(folder), to: trash.appendingPathComponent(Leftovers.parkedName(folder)))
        let finished = home.appendingPathComponent("tmp/trash-\(dead)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: finished.appendingPathComponent(Leftovers.parkedName("subjects/77")), withIntermediateDirectories: true)
        XCTAssertFalse(try store.checkHealth().isHealthy, "the photos are missing while parked")

        let reopened = try SubjectStore(home: home)
        XCTAssertTrue(try reopened.checkHealth(verifyHashes: true).isHealthy)
        XCTAssertFalse(FileManager.default.fileExists(atPath: trash.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: finished.path))
        XCTAssertEqual(try reopened.checkHealth().leftovers, [])
    }
}
