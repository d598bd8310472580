import Foundation
import GRDB
import KoalaImageIO
import KoalaStore
import KoalaTestSupport
import XCTest

extension CLI {
    /// Runs the executable with `input` as its standard input (not a terminal).
    static func run(_ args: [String], environment: [String: String], input: String) throws -> CLIResult {
        let r = try runChildProcess(executable, arguments: args, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, input: input)
        return CLIResult(status: r.status, stdout: r.stdout, stderr: r.stderr)
    }
}

final class SubjectCLITests: XCTestCase {
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }
    var env: [String: String] { ["KOALABOOTH_HOME": home.path] }

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// `koalabooth args...` on this test's data directory, stdin empty.
    @discardableResult
    func kb(_ args: String...) throws -> CLIResult { try CLI.run(args, environment: env, input: "") }
    func kb(_ args: [String]) throws -> CLIResult { try CLI.run(args, environment: env, input: "") }

    /// A photo made with the image encoders: a gradient that differs with `seed`.
    func photo(_ name: String, seed: Int, width: Int = 288, height: Int = 256) throws -> String {
        let pixels = gradientPixels(seed: seed, width: width, height: height)
        let path = dir.appendingPathComponent(name).path
        let image = RGBImage(width: width, height: height, pixels: pixels)
        if name.hasSuffix(".png") { try image.writePNG(path: path) } else { try image.writeJPEG(path: path, quality: 90) }
        return path
    }

    func photos(_ n: Int, prefix: String = "p", from: Int = 0) throws -> [String] {
        try (from..<(from + n)).map { try photo("\(prefix)\($0).\($0 % 2 == 0 ? "jpg" : "png")", seed: $0) }
    }

    func json(_ r: CLIResult, file: StaticString = #filePath, line: UInt = #line) throws -> Any {
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
    }

    /// Files in the data directory (but the database's own) with hashes, and every row:
    /// equal before and after means a command changed nothing.
    func state() throws -> [String] {
        guard FileManager.default.fileExists(atPath: home.path) else { return ["<no data directory>"] }
        var out: [String] = []
        let walker = FileManager.default.enumerator(at: home, includingPropertiesForKeys: [.isRegularFileKey])!
        for case let url as URL in walker where (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true {
            let rel = String(url.standardizedFileURL.path.dropFirst(home.standardizedFileURL.path.count + 1))
            if rel.hasPrefix(SubjectStore.databaseFileName) || rel == ".migrate.lock" { continue }
            out.append("file \(rel) \(try SHA256.hexOfFile(atPath: url.path).hex)")
        }
        if SubjectStore.databaseExists(at: home) {
            let queue = try DatabaseQueue(path: home.appendingPathComponent(SubjectStore.databaseFileName).path)
            try queue.read { db in
                for table in ["subject", "photo", "trainingRun", "checkpoint", "generation"] {
                    for row in try Row.fetchAll(db, sql: "SELECT * FROM \(table) ORDER BY id") { out.append("\(table) \(row)") }
                }
            }
        }
        return out.sorted()
    }

    func assertFailsChangingNothing(_ args: [String], mentions expected: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let before = try state()
        let r = try kb(args)
        XCTAssertNotEqual(r.status, 0, "\(args) should fail; stdout: \(r.stdout)", file: file, line: line)
        for text in expected {
            XCTAssertTrue(r.stderr.contains(text), "\(args): stderr lacks '\(text)':\n\(r.stderr)", file: file, line: line)
        }
        XCTAssertEqual(try state(), before, "\(args) changed the data directory", file: file, line: line)
    }

    // MARK: Commands

    func testCreateListShowRenameDelete() throws {
        let pics = try photos(4)
        let created = try kb(["subject", "create", "rex", "--class", "dog", "--notes", "good boy"] + pics)
        XCTAssertEqual(created.status, 0, created.stderr)
        XCTAssertTrue(created.stdout.contains("Created subject rex"), created.stdout)

        let list = try json(kb("subject", "list", "--json")) as! [[String: Any]]
        XCTAssertEqual(list.count, 1)
        XCTAssertEqual((list[0]["subject"] as! [String: Any])["name"] as? String, "rex")
        XCTAssertEqual(list[0]["photoCount"] as? Int, 4)
        let table = try kb("subject", "list")
        XCTAssertTrue(table.stdout.contains("rex") && table.stdout.contains("sks dog"), table.stdout)

        let show = try json(kb("subject", "show", "REX", "--json")) as! [String: Any]
        let subject = show["subject"] as! [String: Any]
        XCTAssertEqual(subject["token"] as? String, "sks")
        XCTAssertEqual(subject["classNoun"] as? String, "dog")
        XCTAssertEqual(subject["notes"] as? String, "good boy")
        let photos = show["photos"] as! [[String: Any]]
        XCTAssertEqual(photos.map { $0["originalName"] as! String }, pics.map { ($0 as NSString).lastPathComponent })
        for (p, source) in zip(photos, pics) {
            XCTAssertEqual(p["sha256"] as? String, try SHA256.hexOfFile(atPath: source).hex)
            XCTAssertEqual(p["width"] as? Int, 288)
            let stored = home.appendingPathComponent(p["path"] as! String).path
            XCTAssertEqual(FileManager.default.contents(atPath: stored), FileManager.default.contents(atPath: source))
        }
        XCTAssertTrue((photos[1]["path"] as! String).hasSuffix(".png"))
        XCTAssertEqual((show["runs"] as! [Any]).count, 0)
        let text = try kb("subject", "show", "rex")
        XCTAssertTrue(text.stdout.contains("photos (4)"), text.stdout)

        XCTAssertEqual(try kb("subject", "rename", "rex", "rexy").status, 0)
        XCTAssertNotEqual(try kb("subject", "show", "rex").status, 0)
        XCTAssertEqual(try kb("subject", "show", "rexy").status, 0)

        let id = subject["id"] as! Int
        XCTAssertTrue(FileManager.default.fileExists(atPath: home.appendingPathComponent("subjects/\(id)").path))
        let deleted = try kb("subject", "delete", "rexy", "--yes")
        XCTAssertEqual(deleted.status, 0, deleted.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: home.appendingPathComponent("subjects/\(id)").path))
        XCTAssertEqual((try json(kb("subject", "list", "--json")) as! [Any]).count, 0)
        XCTAssertEqual(try kb("doctor").status, 0)
    }

    func testAddAndRemovePhotos() throws {
        let pics = try photos(3)
        XCTAssertEqual(try kb(["subject", "create", "rex", "--class", "dog"] + pics).status, 0)
        let more = try photos(2, from: 3)
        let added = try kb(["subject", "add-photos", "rex", pics[0]] + more + ["--json"])
        let addedPhotos = try json(added) as! [[String: Any]]
        XCTAssertEqual(addedPhotos.count, 2)
        XCTAssertTrue(added.stderr.contains("already has this picture"), added.stderr)

        let sha = addedPhotos[0]["sha256"] as! String
        let byHash = try kb("subject", "remove-photo", "rex", String(sha.prefix(8)))
        XCTAssertEqual(byHash.status, 0, byHash.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: home.appendingPathComponent(addedPhotos[0]["path"] as! String).path))
        XCTAssertEqual(try kb("subject", "remove-photo", "rex", "p4.jpg").status, 0)
        var show = try json(kb("subject", "show", "rex", "--json")) as! [String: Any]
        XCTAssertEqual((show["photos"] as! [Any]).count, 3)

        // Going below three photos needs --force.
        try assertFailsChangingNothing(["subject", "remove-photo", "rex", "p0.jpg"], mentions: ["fewer than the 3", "--force"])
        XCTAssertEqual(try kb("subject", "remove-photo", "rex", "p0.jpg", "--force").status, 0)
        show = try json(kb("subject", "show", "rex", "--json")) as! [String: Any]
        XCTAssertEqual((show["photos"] as! [[String: Any]]).map { $0["originalName"] as! String }, ["p1.png", "p2.jpg"])
        XCTAssertEqual(try kb("doctor").status, 0)
    }

    func testMoreThanTwentyPhotosWarnsButWorks() throws {
        let pics = try (0..<21).map { try photo("s\($0).png", seed: $0, width: 20, height: 20) }
        let r = try kb(["subject", "create", "many", "--class", "mug", "--min-side", "16"] + pics)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("warning: 21 photos"), r.stderr)
    }

    func testForceAcceptsCommonWordToken() throws {
        let r = try kb(["subject", "create", "rex", "--class", "dog", "--token", "blue", "--force"] + photos(3))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("warning"), r.stderr)
        let show = try json(kb("subject", "show", "rex", "--json")) as! [String: Any]
        XCTAssertEqual((show["subject"] as! [String: Any])["token"] as? String, "blue")
    }

    // MARK: Bad input

    func testFailedCreateOnNewDirectoryCreatesNothing() throws {
        try assertFailsChangingNothing(["subject", "create", "rex", "--class", "dog"] + photos(2), mentions: ["at least 3 photos"])
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/images")
        try assertFailsChangingNothing(["subject", "create", "rex", "--class", "dog"] + photos(3) + [fixtures.appendingPathComponent("corrupt.jpg").path],
                                       mentions: ["corrupt.jpg", "nothing was stored"])
        XCTAssertEqual(try state(), ["<no data directory>"])
        XCTAssertEqual(try kb("subject", "list").status, 0)
        XCTAssertEqual(try state(), ["<no data directory>"], "listing must not create the data directory")
    }

    func testBadInputIsAClearErrorAndChangesNothing() throws {
        let pics = try photos(3)
        XCTAssertEqual(try kb(["subject", "create", "rex", "--class", "dog"] + pics).status, 0)
        let run = try SubjectStore(home: home).createRun(TrainingRun(subjectId: 1, baseModelPath: "/m", baseModelFingerprint: "f", recipe: "", totalSteps: 5))
        let fresh = try photos(3, prefix: "q", from: 10)
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/images")
        func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }
        let tiny = try photo("tiny.png", seed: 1, width: 300, height: 100)

        // Unknown subject, in every command that names one.
        for args in [["subject", "show", "nobody"], ["subject", "add-photos", "nobody"] + fresh, ["subject", "remove-photo", "nobody", "abcd"],
                     ["subject", "rename", "nobody", "x"], ["subject", "delete", "nobody", "--yes"], ["runs", "list", "--subject", "nobody"]] {
            try assertFailsChangingNothing(args, mentions: ["no subject named nobody", "koalabooth subject list"])
        }
        try assertFailsChangingNothing(["runs", "show", "999"], mentions: ["no training run with id 999"])
        XCTAssertEqual(try kb("runs", "show", String(run.id!)).status, 0)
        // Duplicate names, ignoring case.
        try assertFailsChangingNothing(["subject", "create", "REX", "--class", "dog"] + fresh, mentions: ["already exists"])
        XCTAssertEqual(try kb(["subject", "create", "fido", "--class", "dog"] + fresh).status, 0)
        try assertFailsChangingNothing(["subject", "rename", "fido", "Rex"], mentions: ["already exists"])
        // Names and tokens.
        try assertFailsChangingNothing(["subject", "create", "bad name", "--class", "dog"] + fresh, mentions: ["invalid subject name", "letters, digits"])
        try assertFailsChangingNothing(["subject", "rename", "rex", "a/b"], mentions: ["invalid subject name"])
        try assertFailsChangingNothing(["subject", "create", "new", "--class", "dog", "--token", "the"] + fresh, mentions: ["common English word", "--force"])
        try assertFailsChangingNothing(["subject", "create", "new", "--class", "red car", "--token", "car", "--force"] + fresh, mentions: ["part of the class noun"])
        try assertFailsChangingNothing(["subject", "create", "new", "--class", "dog", "--token", "two words"] + fresh, mentions: ["more than one word"])
        // Photo counts.
        try assertFailsChangingNothing(["subject", "create", "new", "--class", "dog"] + Array(fresh.prefix(2)), mentions: ["at least 3 photos, got 2"])
        try assertFailsChangingNothing(["subject", "create", "new", "--class", "dog", fresh[0], fresh[0], fresh[1]], mentions: ["only 2 different pictures"])
        // Bad files: each rejects the whole create and is named with its problem.
        let bad: [(String, String)] = [
            (fixture("corrupt.jpg"), "corrupt"), (fixture("truncated.png"), "truncated"), (fixture("empty.jpg"), "empty"),
            (fixture("not_an_image.jpg"), "not a JPEG or PNG"), (fixture("animation.gif"), "GIF images are not supported"),
            (tiny, "smaller than the minimum 256"), (dir.appendingPathComponent("missing.jpg").path, "no such file"),
        ]
        for (path, problem) in bad {
            try assertFailsChangingNothing(["subject", "create", "new", "--class", "dog"] + fresh + [path], mentions: [path, problem, "nothing was stored"])
            try assertFailsChangingNothing(["subject", "add-photos", "rex", fresh[0], path], mentions: [path, problem])
        }
        let all = try kb(["subject", "create", "new", "--class", "dog"] + fresh + bad.map(\.0))
        XCTAssertTrue(all.stderr.contains("7 photos cannot be used"), all.stderr)
        // Photos and confirmation.
        try assertFailsChangingNothing(["subject", "remove-photo", "rex", "ffffffff"], mentions: ["no photo matching"])
        try assertFailsChangingNothing(["subject", "delete", "rex"], mentions: ["not a terminal", "--yes"])
        try assertFailsChangingNothing(["subject", "create", "new", "--class", "dog", "--min-side", "0"] + fresh, mentions: ["--min-side"])
    }

    func testReadOnlyDataDirectoryIsAClearError() throws {
        // /proc refuses new entries even to root, as a read-only mount does.
        let readOnly = "/proc/koalabooth-\(getpid())/home"
        let r = try CLI.run(["subject", "create", "rex", "--class", "dog"] + photos(3), environment: ["KOALABOOTH_HOME": readOnly])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(readOnly) is not writable"), r.stderr)
        XCTAssertTrue(r.stderr.contains("--home"), r.stderr)
        let file = dir.appendingPathComponent("file")
        try Data().write(to: file)
        let f = try CLI.run(["subject", "create", "rex", "--class", "dog", "--home", file.path] + photos(3))
        XCTAssertNotEqual(f.status, 0)
        XCTAssertTrue(f.stderr.contains("is a file, not a directory"), f.stderr)
    }

    func testDatabaseFromNewerVersionIsRefused() throws {
        XCTAssertEqual(try kb(["subject", "create", "rex", "--class", "dog"] + photos(3)).status, 0)
        let queue = try DatabaseQueue(path: home.appendingPathComponent(SubjectStore.databaseFileName).path)
        try queue.write { db in try db.execute(sql: "PRAGMA user_version = 42") }
        try queue.close()
        for args in [["subject", "list"], ["subject", "add-photos", "rex"] + (try photos(1, from: 5)), ["doctor"]] {
            try assertFailsChangingNothing(args, mentions: ["newer KoalaBooth", "schema 42", "Upgrade"])
        }
    }

    // MARK: Several processes

    func testProcessesCreatingSubjectsAtOnce() throws {
        let pics = try photos(3)
        let results = ResultBox()
        let env = self.env
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            results.append(Result { try CLI.run(["subject", "create", "s\(i)", "--class", "dog"] + pics, environment: env, input: "") })
        }
        for r in results.all {
            let r = try r.get()
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        XCTAssertEqual((try json(kb("subject", "list", "--json")) as! [Any]).count, 4)
        XCTAssertEqual(try kb("doctor", "--verify-hashes").status, 0)
    }

    /// A writer in this process (as training would be) holds the write lock while other
    /// processes list and show (WAL: they do not wait) and rename (waits, then succeeds).
    func testReadersAndWritersBesideALongWrite() throws {
        XCTAssertEqual(try kb(["subject", "create", "rex", "--class", "dog"] + photos(3)).status, 0)
        let store = try SubjectStore(home: home)
        let renamed = ResultBox()
        let env = self.env
        try store.database.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) {
                try db.execute(sql: "UPDATE subject SET notes = 'training' WHERE name = 'rex'")
                let list = try json(kb("subject", "list", "--json")) as! [[String: Any]]
                XCTAssertEqual(list.count, 1)
                XCTAssertEqual(try kb("subject", "show", "rex").status, 0)
                XCTAssertEqual(try kb("runs", "list", "--json").status, 0)
                let thread = Thread { renamed.append(Result { try CLI.run(["subject", "rename", "rex", "rexy"], environment: env, input: "") }) }
                thread.start()
                Thread.sleep(forTimeInterval: 1.5)
                XCTAssertEqual(renamed.all.count, 0, "rename should wait for the lock")
                return .commit
            }
        }
        let deadline = Date().addingTimeInterval(30)
        while renamed.all.isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let r = try XCTUnwrap(renamed.all.first).get()
        XCTAssertEqual(r.status, 0, r.stderr)
        let subject = try XCTUnwrap(store.subject(named: "rexy"))
        XCTAssertEqual(subject.notes, "training")
    }

    // MARK: Runs and doctor

    func testRunsAndGenerationsShowUp() throws {
        XCTAssertEqual(try kb(["subject", "create", "rex", "--class", "dog"] + photos(3)).status, 0)
        XCTAssertEqual(try kb(["subject", "create", "fido", "--class", "dog"] + photos(3, from: 3)).status, 0)
        let store = try SubjectStore(home: home)
        let rex = try store.requireSubject(named: "rex")
        let run = try store.createRun(TrainingRun(subjectId: rex.id!, status: .finished, baseModelPath: "/models/koala-700m",
                                                  baseModelFingerprint: "f00d", recipe: "[train]\nsteps = 400", totalSteps: 400,
                                                  stepsDone: 400, lastLoss: 0.0625, elapsedSeconds: 3725))
        let file = store.runDirectory(subjectID: rex.id!, runID: run.id!).appendingPathComponent("lora-400.safetensors")
        try writeFile(Data(repeating: 3, count: 4096), to: file)
        let ckpt = try store.recordCheckpoint(runID: run.id!, step: 400, kind: .lora, file: file)
        let image = store.generationDirectory(subjectID: rex.id!).appendingPathComponent("g1.png")
        try writeFile(Data("png".utf8), to: image)
        _ = try store.recordGeneration(Generation(subjectId: rex.id!, runId: run.id, checkpointId: ckpt.id, prompt: "a sks dog on a beach", seed: 7,
                                               steps: 25, scheduler: "dpmsolver++", guidanceScale: 5, width: 1024, height: 1024,
                                               imagePath: try store.relativePath(of: image)))

        let runs = try json(kb("runs", "list", "--json")) as! [[String: Any]]
        XCTAssertEqual(runs.count, 1)
        XCTAssertEqual(runs[0]["subject"] as? String, "rex")
        XCTAssertEqual((runs[0]["run"] as! [String: Any])["status"] as? String, "finished")
        XCTAssertEqual((try json(kb("runs", "list", "--subject", "fido", "--json")) as! [Any]).count, 0)
        XCTAssertTrue(try kb("runs", "list").stdout.contains("400/400"))
        let detail = try json(kb("runs", "show", String(run.id!), "--json")) as! [String: Any]
        XCTAssertEqual((detail["run"] as! [String: Any])["recipe"] as? String, "[train]\nsteps = 400")
        XCTAssertEqual((detail["checkpoints"] as! [[String: Any]]).first?["sha256"] as? String, try SHA256.hexOfFile(atPath: file.path).hex)
        XCTAssertTrue(try kb("runs", "show", String(run.id!)).stdout.contains("1h02m"))
        let show = try json(kb("subject", "show", "rex", "--json")) as! [String: Any]
        XCTAssertEqual((show["runs"] as! [Any]).count, 1)
        XCTAssertEqual((show["checkpoints"] as! [Any]).count, 1)
        XCTAssertEqual((show["generations"] as! [[String: Any]]).first?["prompt"] as? String, "a sks dog on a beach")
        let list = try json(kb("subject", "list", "--json")) as! [[String: Any]]
        XCTAssertEqual(list.first { ($0["subject"] as! [String: Any])["name"] as? String == "rex" }?["lastRunStatus"] as? String, "finished")

        // Deleting the subject removes the run's and generation's files too.
        XCTAssertEqual(try kb("subject", "delete", "rex", "--yes").status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: file.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: image.path))
        XCTAssertEqual((try json(kb("runs", "list", "--json")) as! [Any]).count, 0)
        XCTAssertEqual(try kb("doctor").status, 0)
    }

    func testDoctorFindsMissingFilesAndOrphans() throws {
        try assertFailsChangingNothing(["doctor"], mentions: ["no KoalaBooth data directory"])
        XCTAssertEqual(try kb(["subject", "create", "rex", "--class", "dog"] + photos(3)).status, 0)
        let healthy = try kb("doctor")
        XCTAssertEqual(healthy.status, 0, healthy.stdout + healthy.stderr)
        XCTAssertTrue(healthy.stdout.contains("database integrity: ok"), healthy.stdout)

        let show = try json(kb("subject", "show", "rex", "--json")) as! [String: Any]
        let gone = (show["photos"] as! [[String: Any]])[1]["path"] as! String
        try FileManager.default.removeItem(at: home.appendingPathComponent(gone))
        let stray = "subjects/\((show["subject"] as! [String: Any])["id"] as! Int)/photos/stray.jpg"
        try Data("x".utf8).write(to: home.appendingPathComponent(stray))
        let r = try kb("doctor")
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stdout.contains("\(gone): missing"), r.stdout)
        XCTAssertTrue(r.stdout.contains(stray), r.stdout)
        XCTAssertTrue(r.stderr.contains("2 problems"), r.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(try kb("doctor", "--json").stdout.utf8)) as! [String: Any]
        XCTAssertEqual((report["fileProblems"] as! [[String: Any]]).map { $0["path"] as! String }, [gone])
        XCTAssertEqual(report["orphans"] as? [String], [stray])
        XCTAssertEqual(report["integrity"] as? [String], ["ok"])
    }

    func testMovedDataDirectoryKeepsWorking() throws {
        let a = dir.appendingPathComponent("a"), b = dir.appendingPathComponent("b")
        XCTAssertEqual(try CLI.run(["subject", "create", "rex", "--class", "dog", "--home", a.path] + photos(3)).status, 0)
        try FileManager.default.moveItem(at: a, to: b)
        let r = try CLI.run(["doctor", "--verify-hashes", "--home", b.path])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(try CLI.run(["subject", "show", "rex", "--home", b.path]).status, 0)
    }

    func testDeleteAsksOnATerminal() throws {
        let script = "/usr/bin/script"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: script), "script(1) is needed to give the command a terminal")
        XCTAssertEqual(try kb(["subject", "create", "rex", "--class", "dog"] + photos(3)).status, 0)
        func onTerminal(answer: String) throws -> CLIResult {
            let command = "\(CLI.executable.path) subject delete rex --home \(home.path)"
            return try CLI.runProgram(script, arguments: ["-qec", command, "/dev/null"], input: answer)
        }
        let no = try onTerminal(answer: "n\n")
        XCTAssertTrue(no.stdout.contains("[y/N]"), no.stdout)
        XCTAssertTrue(no.stdout.contains("Nothing deleted"), no.stdout)
        XCTAssertEqual(try kb("subject", "show", "rex").status, 0)
        let yes = try onTerminal(answer: "y\n")
        XCTAssertTrue(yes.stdout.contains("Deleted rex"), yes.stdout)
        XCTAssertNotEqual(try kb("subject", "show", "rex").status, 0)
    }

    func testHelpForEveryCommand() throws {
        for args in [["subject"], ["subject", "create"], ["subject", "add-photos"], ["subject", "remove-photo"], ["subject", "list"],
                     ["subject", "show"], ["subject", "rename"], ["subject", "delete"], ["runs"], ["runs", "list"], ["runs", "show"], ["doctor"]] {
            let r = try kb(args + ["--help"])
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains("USAGE"), "\(args)")
        }
    }
}

extension CLI {
    /// Runs another program (for `script`), stdin from `input`.
    static func runProgram(_ executable: String, arguments: [String], input: String) throws -> CLIResult {
        let r = try runChildProcess(URL(fileURLWithPath: executable), arguments: arguments, input: input)
        return CLIResult(status: r.status, stdout: r.stdout, stderr: r.stderr)
    }
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<CLIResult, Error>] = []
    func append(_ r: Result<CLIResult, Error>) { lock.lock(); results.append(r); lock.unlock() }
    var all: [Result<CLIResult, Error>] { lock.lock(); defer { lock.unlock() }; return results }
}
