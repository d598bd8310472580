import Foundation
import KoalaStore
import XCTest

/// Common ground of the `koalabooth train` tests: a fresh data directory holding the
/// subject `robo` (class toy, token sks), the shared tiny model, recipes derived from
/// recipes/tiny.toml, and training runs started as subprocesses to be killed mid-way.
class TrainingTestCase: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var dir: URL!
    var home: URL { dir.appendingPathComponent("home") }
    var model: String { CLI.tinyModel }
    var env: [String: String] { ["KOALABOOTH_HOME": home.path] }
    var tinyRecipe: String { Self.root.appendingPathComponent("recipes/tiny.toml").path }

    /// The photos `robo` is created with: the example subject subjects/robot-toy.
    func subjectPhotos() throws -> [String] {
        let photos = Self.root.appendingPathComponent("subjects/robot-toy")
        return try FileManager.default.contentsOfDirectory(atPath: photos.path).filter { $0.hasSuffix(".jpg") }.sorted()
            .map { photos.appendingPathComponent($0).path }
    }

    override func setUpWithError() throws {
        dir = try CLI.temporaryDirectory()
        let r = try CLI.run(["subject", "create", "robo", "--class", "toy", "--token", "sks"] + subjectPhotos(), environment: env)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// recipes/tiny.toml with each `from` (which must occur in it) replaced by `to`.
    func recipe(_ edits: [(from: String, to: String)]) throws -> String {
        var text = try String(contentsOfFile: tinyRecipe, encoding: .utf8)
        for (a, b) in edits {
            XCTAssertTrue(text.contains(a), "tiny.toml has no '\(a)'")
            text = text.replacingOccurrences(of: a, with: b)
        }
        let url = dir.appendingPathComponent("recipe-\(UUID().uuidString).toml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    /// The per-step losses printed as `step I/N loss L …`.
    static func losses(_ stdout: String) -> [Double] {
        stdout.split(separator: "\n").compactMap { line -> Double? in
            let w = line.split(separator: " ")
            guard w.count > 3, w[0] == "step", w[2] == "loss" else { return nil }
            return Double(w[3])
        }
    }

    /// Starts `koalabooth train robo ARGS` in the background (output discarded unless
    /// `stderr` is given).
    func startTraining(_ args: [String], stderr: Pipe? = nil) throws -> Process {
        let p = Process()
        p.executableURL = CLI.executable
        p.arguments = ["train", "robo"] + args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = stderr ?? FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Waits (up to two minutes) until `ready` holds while `p` runs; fails the test if
    /// `p` ended first.
    func wait(for p: Process, until ready: () throws -> Bool) rethrows {
        let deadline = Date().addingTimeInterval(120)
        while try !ready() && p.isRunning && Date() < deadline { usleep(5_000) }
        XCTAssertTrue(p.isRunning, "the run ended before it could be stopped")
    }

    /// SIGKILLs `p` (no chance to clean up) once `ready` holds.
    func kill(_ p: Process, once ready: () throws -> Bool) rethrows {
        try wait(for: p, until: ready)
        Foundation.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Whether `directory` holds the resume state of `step`.
    static func hasCheckpoint(_ step: Int, in directory: URL) -> Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent(String(format: "state-step%06d.json", step)).path)
    }
}

/// What `checkKilledRunResumes` ran, for further checks.
struct ResumeCheck {
    let store: SubjectStore
    /// stdout of the uninterrupted run and of the resumed one.
    let uninterrupted: String
    let resumed: String
    let uninterruptedDirectory: URL
    let resumedRunID: Int64
    let resumedDirectory: URL
}

extension TrainingTestCase {
    /// The resume guarantee: `train robo ARGS` once to the end, then again SIGKILLed once
    /// the step-`killAfter` checkpoint exists (or `killWhen(runDirectory)` holds), then
    /// `train robo --resume`. The resumed steps must print the uninterrupted run's losses
    /// and each of `sameFiles` must be byte-identical in both run folders. `afterKill`
    /// looks at the store and the killed run's id before the resume.
    @discardableResult
    func checkKilledRunResumes(_ args: [String], killAfter step: Int, sameFiles: [String],
                               killWhen: ((URL) -> Bool)? = nil, afterKill: ((SubjectStore, Int64) throws -> Void)? = nil,
                               file: StaticString = #filePath, line: UInt = #line) throws -> ResumeCheck {
        let a = try CLI.run(["train", "robo"] + args, environment: env)
        XCTAssertEqual(a.status, 0, a.stderr, file: file, line: line)
        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let aRun = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        let bID = aRun.id! + 1
        let aDir = store.runDirectory(subjectID: subject.id!, runID: aRun.id!)
        let bDir = store.runDirectory(subjectID: subject.id!, runID: bID)

        let p = try startTraining(args)
        kill(p, once: { killWhen?(bDir) ?? Self.hasCheckpoint(step, in: bDir) })
        XCTAssertEqual(try store.run(id: bID)?.status, .running, "a killed run cannot record its end", file: file, line: line)
        try afterKill?(store, bID)

        let r = try CLI.run(["train", "robo", "--resume"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout, file: file, line: line)
        XCTAssertTrue(r.stdout.contains("resuming run \(bID) from step \(step)"), r.stdout, file: file, line: line)
        let resumedLosses = Self.losses(r.stdout)
        XCTAssertEqual(resumedLosses.count, Self.losses(a.stdout).count - step, r.stdout, file: file, line: line)
        XCTAssertEqual(resumedLosses, Array(Self.losses(a.stdout).suffix(resumedLosses.count)), file: file, line: line)
        for name in sameFiles {
            XCTAssertEqual(try Data(contentsOf: aDir.appendingPathComponent(name)), try Data(contentsOf: bDir.appendingPathComponent(name)),
                           name, file: file, line: line)
        }
        XCTAssertEqual(try store.run(id: bID)?.status, .finished, file: file, line: line)
        return ResumeCheck(store: store, uninterrupted: a.stdout, resumed: r.stdout, uninterruptedDirectory: aDir,
                           resumedRunID: bID, resumedDirectory: bDir)
    }
}

/// Runs `body(i)` for every i in 0..<count, `width` at a time, each on a thread of its own
/// (Dispatch's pool would keep to one per core while they wait on child processes), and
/// returns the results in the order of i. `body` must not call XCTest's assertions: they
/// record into the running test from one thread at a time.
func concurrently<T>(_ count: Int, width: Int, _ body: @escaping (Int) -> T) -> [T] {
    let work = ConcurrentWork(count: count, body: body)
    let done = DispatchGroup()
    for _ in 0..<min(width, count) {
        done.enter()
        Thread.detachNewThread {
            while let i = work.take() { work.put(i, work.body(i)) }
            done.leave()
        }
    }
    done.wait()
    return work.results.map { $0! }
}

/// The shared state of `concurrently`: the next index and the results, under a lock.
private final class ConcurrentWork<T>: @unchecked Sendable {
    let count: Int
    let body: (Int) -> T
    private let lock = NSLock()
    private var next = 0
    private(set) var results: [T?]

    init(count: Int, body: @escaping (Int) -> T) {
        self.count = count
        self.body = body
        results = Array(repeating: nil, count: count)
    }

    func take() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard next < count else { return nil }
        next += 1
        return next - 1
    }

    func put(_ i: Int, _ result: T) {
        lock.lock()
        results[i] = result
        lock.unlock()
    }
}
