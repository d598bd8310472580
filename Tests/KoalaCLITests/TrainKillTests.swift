import Foundation
import KoalaStore
import XCTest

/// SIGKILL at every durable write of a short run (`DurableWrite`'s fault hook,
/// `KOALABOOTH_FAULT_KILL_AT_WRITE`), then `train --resume`: the result must be the
/// uninterrupted run's, file for file and row for row.
final class TrainKillTests: TrainingTestCase {
    /// What a finished run leaves: every file of its folder (bytes; resume states without
    /// their wall-clock time), its checkpoint and generation rows, and its outcome.
    struct Outcome: Equatable {
        var files: [String: Data]
        var checkpoints: [String]
        var generations: [String]
        var run: String
    }

    /// One kill point: the copy of the home it ran in, the killed run, the listing after
    /// it and the run's row then (nil when the kill came before the run was recorded),
    /// and the run that finished it.
    struct KilledRun {
        var home: URL
        var killed: CLIResult
        var listing: CLIResult?
        var run: TrainingRun?
        var resumed: CLIResult
    }

    func outcome(home: URL) throws -> Outcome {
        let store = try SubjectStore(home: home)
        let run = try XCTUnwrap(store.runs().first)
        let dir = store.runDirectory(subjectID: run.subjectId, runID: run.id!)
        var files: [String: Data] = [:]
        for case let rel as String in FileManager.default.enumerator(atPath: dir.path)! {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir.appendingPathComponent(rel).path, isDirectory: &isDir), !isDir.boolValue else { continue }
            var data = try Data(contentsOf: dir.appendingPathComponent(rel))
            if rel.hasPrefix("state-") {
                var json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
                json["elapsedSeconds"] = nil
                data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
            }
            files[rel] = data
        }
        let checkpoints = try store.checkpoints(runID: run.id!)
        let stepOf = Dictionary(uniqueKeysWithValues: checkpoints.map { ($0.id!, $0.step) })
        return Outcome(
            files: files,
            checkpoints: checkpoints.map { "\($0.step) \($0.kind) \($0.path) \($0.sha256) \($0.byteCount)" },
            generations: try store.generations(subjectID: run.subjectId).sorted { $0.imagePath < $1.imagePath }.map { g in
                "\(g.imagePath) run \(g.runId ?? -1) checkpoint-step \(g.checkpointId.flatMap { stepOf[$0] } ?? -1) \(g.prompt) "
                    + "\(g.seed) \(g.steps) \(g.scheduler) \(g.guidanceScale) \(g.width)x\(g.height)"
            },
            run: "\(run.status) \(run.stepsDone)/\(run.totalSteps) \(run.lastLoss.map { "\($0)" } ?? "-") \(run.errorMessage ?? "-")")
    }

    func testSIGKILLAtEveryWriteThenResumeEqualsAnUninterruptedRun() throws {
        // The smallest run with everything a step writes: checkpoints at 2 and 4 (keep_last
        // = 1 retires step 2 at step 4), validation images at 3 (between checkpoints) and
        // 4 (the final step, with its checkpoint), progress every step.
        let path = try recipe([("max_steps = 30", "max_steps = 4"), ("every = 10", "every = 2"),
                               ("keep_last = 2", "keep_last = 1"), ("every = 15", "every = 3"), ("\nsteps = 4", "\nsteps = 2")])
        let args = ["train", "robo", "--recipe", path, "--model", model]
        let began = Date()
        func copyOfHome(_ name: String) throws -> URL {
            let copy = dir.appendingPathComponent(name)
            try FileManager.default.copyItem(at: home, to: copy)
            return copy
        }

        let reference = try copyOfHome("reference")
        let counted = try CLI.run(args, environment: ["KOALABOOTH_HOME": reference.path, "KOALABOOTH_FAULT_KILL_AT_WRITE": "0"])
        XCTAssertEqual(counted.status, 0, counted.stderr + counted.stdout)
        let points = counted.stderr.split(separator: "\n").filter { $0.hasPrefix("fault point ") }
            .map { String($0.split(separator: ":", maxSplits: 1)[1].dropFirst()) }
        let expected = try outcome(home: reference)
        XCTAssertEqual(expected.checkpoints.map { $0.split(separator: " ")[0] }, ["4"])
        XCTAssertEqual(Set(expected.files.keys), ["lora-step000004.safetensors", "optimizer-step000004.safetensors", "state-step000004.json",
                                                  "validation/step000003-p1-1.png", "validation/step000004-p1-1.png"])
        XCTAssertEqual(expected.generations.count, 2)
        // Each kind of write is among the points.
        for name in ["new run", "progress of step 3", "lora-step000002.safetensors", "optimizer-step000002.safetensors",
                     "state-step000002.json", "checkpoint row of step 2", "step000003-p1-1.png", "validation row step000003-p1-1.png",
                     "retiring checkpoint step 2", "checkpoint row of step 4", "run status finished"] {
            XCTAssertTrue(points.contains(name), "\(name) not in \(points)")
        }

        // The kill points are independent (a copy of the home each) and a run mostly waits
        // for process start and fsync, so several run at once; the checks stay on this
        // thread, in order.
        let killedRuns = concurrently(points.count, width: 4) { i in
            Result { () throws -> KilledRun in
                let h = try copyOfHome("kill-\(i + 1)")
                let killed = try CLI.run(args, environment: ["KOALABOOTH_HOME": h.path, "KOALABOOTH_FAULT_KILL_AT_WRITE": "\(i + 1)"])
                let env = ["KOALABOOTH_HOME": h.path]
                let hasRun = try !SubjectStore(home: h).runs().isEmpty
                // A listing is what notices the killed run.
                let listing = try hasRun ? CLI.run(["runs", "list"], environment: env) : nil
                let run = try hasRun ? SubjectStore(home: h).runs().first : nil
                let resumed = try CLI.run(hasRun ? ["train", "robo", "--resume"] : args, environment: env)
                return KilledRun(home: h, killed: killed, listing: listing, run: run, resumed: resumed)
            }
        }
        for (i, point) in points.enumerated() {
            let k = i + 1
            let r = try killedRuns[i].get()
            XCTAssertEqual(r.killed.status, SIGKILL, "kill before write \(k) (\(point)): \(r.killed.stderr)")
            if let listing = r.listing {
                XCTAssertEqual(listing.status, 0)
                let run = try XCTUnwrap(r.run)
                XCTAssertEqual(run.status, .interrupted, "kill before write \(k) (\(point))")
                XCTAssertNotNil(run.errorMessage)
            }
            XCTAssertEqual(r.resumed.status, 0, "kill before write \(k) (\(point)): \(r.resumed.stderr + r.resumed.stdout)")
            XCTAssertEqual(try outcome(home: r.home), expected, "kill before write \(k) (\(point))")
            try FileManager.default.removeItem(at: r.home)
        }
        print("TrainKillTests: \(points.count) kill points in \(String(format: "%.1f", Date().timeIntervalSince(began))) s")
    }
}
