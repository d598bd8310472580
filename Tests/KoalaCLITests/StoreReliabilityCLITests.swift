import Foundation
import GRDB
import KoalaStore
import XCTest

/// The data directory under bad luck (issue 13, items 9 and 10): an emptied or foreign
/// database, a full disk, a read-only directory, leftovers of killed commands.
final class StoreReliabilityCLITests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }
    var env: [String: String] { ["KOALABOOTH_HOME": home.path] }
    var databaseURL: URL { home.appendingPathComponent(SubjectStore.databaseFileName) }
    /// Mount points to unmount at the end.
    var mounts: [String] = []

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }

    override func tearDownWithError() throws {
        for m in mounts.reversed() { _ = Self.tool("/bin/umount", ["-l", m]) }
        try? FileManager.default.removeItem(at: dir)
    }

    /// The example photos of subjects/robot-toy (6 JPEGs, 240 KB in all).
    func photos(_ n: Int = 3) throws -> [String] {
        let folder = Self.repository.appendingPathComponent("subjects/robot-toy")
        return try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".jpg") }.sorted()
            .prefix(n).map { folder.appendingPathComponent($0).path }
    }

    @discardableResult
    func kb(_ args: [String], home: URL? = nil) throws -> CLIResult {
        try CLI.run(args, environment: ["KOALABOOTH_HOME": (home ?? self.home).path])
    }

    static func tool(_ path: String, _ args: [String]) -> Bool {
        guard FileManager.default.isExecutableFile(atPath: path) else { return false }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    func createRex(home: URL? = nil) throws {
        let r = try kb(["subject", "create", "rex", "--class", "dog"] + photos(), home: home)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    // MARK: Item 9

    func testEmptiedMissingOrForeignDatabaseIsRefused() throws {
        try createRex()
        try Data().write(to: databaseURL)
        let pics = try photos()
        for args in [["subject", "list"], ["subject", "show", "rex"], ["doctor"], ["subject", "create", "max", "--class", "dog"] + pics] {
            let r = try kb(args)
            XCTAssertNotEqual(r.status, 0, "\(args): \(r.stdout)")
            for words in [databaseURL.path, "empty (0 bytes)", "1 subject", "Restore", "KOALABOOTH_HOME"] {
                XCTAssertTrue(r.stderr.contains(words), "\(args): stderr lacks '\(words)':\n\(r.stderr)")
            }
            XCTAssertFalse(r.stdout.contains("No subjects"), r.stdout)
            XCTAssertFalse(r.stdout.contains("safe to delete"), r.stdout)
            XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: databaseURL.path)[.size] as? Int, 0)
        }
        try FileManager.default.removeItem(at: databaseURL)
        let missing = try kb(["subject", "list"])
        XCTAssertNotEqual(missing.status, 0, missing.stdout)
        XCTAssertTrue(missing.stderr.contains("\(databaseURL.path) is missing"), missing.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: databaseURL.path))

        let foreign = try DatabaseQueue(path: databaseURL.path)
        try foreign.write { db in try db.execute(sql: "CREATE TABLE bookmark (url TEXT)") }
        try foreign.close()
        let before = try Data(contentsOf: databaseURL)
        let r = try kb(["subject", "list"])
        XCTAssertNotEqual(r.status, 0, r.stdout)
        XCTAssertTrue(r.stderr.contains("\(databaseURL.path) is not a KoalaBooth database"), r.stderr)
        XCTAssertTrue(r.stderr.contains("bookmark"), r.stderr)
        XCTAssertEqual(try Data(contentsOf: databaseURL), before)
    }

    // MARK: Item 10

    /// A 3 MB tmpfs filled to the last byte (needs mount, as root). The full disk is
    /// named as such, by reading and writing commands, and nothing is half-written.
    func testFullDiskIsReportedAsFull() throws {
        let disk = dir.appendingPathComponent("disk")
        try FileManager.default.createDirectory(at: disk, withIntermediateDirectories: true)
        try XCTSkipUnless(Self.tool("/bin/mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", disk.path]),
                          "mounting a small tmpfs is not permitted here; DatabaseOpeningTests.testFullDatabaseIsReportedAsAFullDisk injects SQLITE_FULL instead")
        mounts.append(disk.path)
        let home = disk.appendingPathComponent("home")
        try createRex(home: home)
        // Fill the disk.
        let filler = disk.appendingPathComponent("filler")
        FileManager.default.createFile(atPath: filler.path, contents: nil)
        let handle = try FileHandle(forWritingTo: filler)
        let block = Data(repeating: 1, count: 4096)
        while (try? handle.write(contentsOf: block)) != nil {}
        try handle.close()

        let pics = try photos()
        for args in [["subject", "create", "max", "--class", "cat"] + pics, ["subject", "list"], ["subject", "rename", "rex", "rexy"]] {
            let r = try kb(args, home: home)
            XCTAssertNotEqual(r.status, 0, "\(args): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains("the disk holding the data directory \(home.path) is full"), "\(args):\n\(r.stderr)")
            XCTAssertTrue(r.stderr.contains("Free some space"), r.stderr)
            XCTAssertFalse(r.stderr.contains("cannot be opened"), r.stderr)
            XCTAssertFalse(r.stderr.contains("restore"), r.stderr)
        }
        try FileManager.default.removeItem(at: filler)
        let list = try kb(["subject", "list"], home: home)
        XCTAssertEqual(list.status, 0, list.stderr)
        XCTAssertTrue(list.stdout.contains("rex") && !list.stdout.contains("max"), list.stdout)
        XCTAssertEqual(try kb(["doctor"], home: home).status, 0)
        try XCTAssertEqual(kb(["subject", "create", "max", "--class", "cat"] + photos(), home: home).status, 0)
    }

    /// A read-only data directory: a read-only bind mount as root (permission bits do
    /// not stop root), `chmod a-w` otherwise. Listing, showing and doctor work; changes
    /// are refused with a message that says why.
    func testReadOnlyDataDirectoryStillReads() throws {
        try createRex()
        let readOnly: URL
        if getuid() == 0 {
            readOnly = dir.appendingPathComponent("ro")
            try FileManager.default.createDirectory(at: readOnly, withIntermediateDirectories: true)
            try XCTSkipUnless(Self.tool("/bin/mount", ["--bind", home.path, readOnly.path]), "bind mounts are not permitted here")
            mounts.append(readOnly.path)
            XCTAssertTrue(Self.tool("/bin/mount", ["-o", "remount,ro,bind", readOnly.path]))
        } else {
            readOnly = home
            for path in [home.path] + (FileManager.default.subpaths(atPath: home.path) ?? []).map({ home.appendingPathComponent($0).path }) {
                var isDir: ObjCBool = false
                FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
                try FileManager.default.setAttributes([.posixPermissions: isDir.boolValue ? 0o555 : 0o444], ofItemAtPath: path)
            }
            addTeardownBlock { [home] in _ = Self.tool("/bin/chmod", ["-R", "u+w", home.path]) }
        }
        XCTAssertFalse(FileManager.default.isWritableFile(atPath: readOnly.path) && getuid() != 0)
        let list = try kb(["subject", "list"], home: readOnly)
        XCTAssertEqual(list.status, 0, list.stderr)
        XCTAssertTrue(list.stdout.contains("rex"), list.stdout)
        let show = try kb(["subject", "show", "rex"], home: readOnly)
        XCTAssertEqual(show.status, 0, show.stderr)
        XCTAssertTrue(show.stdout.contains("photos (3)"), show.stdout)
        let doctor = try kb(["doctor", "--verify-hashes"], home: readOnly)
        XCTAssertEqual(doctor.status, 0, doctor.stdout + doctor.stderr)
        XCTAssertTrue(doctor.stdout.contains("no problems found"), doctor.stdout)
        let pics = try photos()
        for args in [["subject", "rename", "rex", "max"], ["subject", "delete", "rex", "--yes"], ["subject", "create", "max", "--class", "cat"] + pics] {
            let r = try kb(args, home: readOnly)
            XCTAssertNotEqual(r.status, 0, "\(args): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains("\(readOnly.path) is read-only"), "\(args):\n\(r.stderr)")
            XCTAssertTrue(r.stderr.contains("subject list"), r.stderr)
        }
        XCTAssertTrue(try kb(["subject", "list"]).stdout.contains("rex"))
    }

    /// What a SIGKILLed `subject create` and a killed atomic write leave is gone after
    /// the next command; `doctor` reports it without removing it.
    func testLeftoversOfKilledProcessesAreCleanedAtTheNextStart() throws {
        try createRex()
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let pid = dead.processIdentifier
        let stage = home.appendingPathComponent("tmp/stage-\(pid)-\(UUID().uuidString)")
        let nosync = home.appendingPathComponent("subjects/1/photos/.dat.nosync\(String(pid, radix: 16, uppercase: true)).x1y2z3")
        try FileManager.default.createDirectory(at: stage, withIntermediateDirectories: true)
        try Data(repeating: 1, count: 1 << 20).write(to: stage.appendingPathComponent("0"))
        try Data(repeating: 2, count: 100).write(to: nosync)

        let doctor = try kb(["doctor"])
        XCTAssertEqual(doctor.status, 0, doctor.stdout + doctor.stderr)
        XCTAssertTrue(doctor.stdout.contains("tmp/\(stage.lastPathComponent)") && doctor.stdout.contains(nosync.lastPathComponent), doctor.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: stage.path), "doctor changes nothing")
        XCTAssertEqual(try kb(["subject", "list"]).status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stage.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: nosync.path))
        let after = try kb(["doctor"])
        XCTAssertFalse(after.stdout.contains("leftovers"), after.stdout)
    }
}
