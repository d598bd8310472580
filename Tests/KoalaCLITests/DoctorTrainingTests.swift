import Foundation
import KoalaStore
import KoalaTestSupport
import XCTest

/// `doctor` after training: every file a run writes belongs to its run, so a healthy
/// store passes, and a file that belongs to nothing is still flagged (issue 13, item 3).
final class DoctorTrainingTests: TrainingTestCase {
    func doctor() throws -> (result: CLIResult, report: [String: Any]) {
        let r = try CLI.run(["doctor"], environment: env)
        let json = try CLI.run(["doctor", "--json"], environment: env)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], json.stdout + json.stderr)
        return (r, report)
    }

    func testDoctorPassesAfterTrainingAndFlagsStrayFiles() throws {
        // Everything a LoRA run writes: diffusers and kohya files, optimizer and resume
        // state, validation images, cached class images; keep_last retires some.
        let recipe = try recipe([
            (from: "format = \"diffusers\"", to: "format = \"both\""),
            (from: "[prior]\nenabled = false", to: "[prior]\nenabled = true\nnum_class_images = 2\ngeneration_steps = 2"),
            (from: "max_steps = 30", to: "max_steps = 20"),
        ])
        let trained = try CLI.run(["train", "robo", "--recipe", recipe, "--model", model], environment: env)
        XCTAssertEqual(trained.status, 0, trained.stderr)
        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let run = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        let runDir = store.runDirectory(subjectID: subject.id!, runID: run.id!)
        let names = try FileManager.default.contentsOfDirectory(atPath: runDir.path)
        for expected in ["lora-step000020.kohya.safetensors", "optimizer-step000020.safetensors", "state-step000020.json", "validation"] {
            XCTAssertTrue(names.contains(expected), "\(expected) not in \(names)")
        }
        let classDir = store.subjectDirectory(subjectID: subject.id!).appendingPathComponent("class-images")
        let keys = try FileManager.default.contentsOfDirectory(atPath: classDir.path)
        XCTAssertEqual(keys.count, 1)

        var (r, report) = try doctor()
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("no problems found"), r.stdout)
        // The machine facts that decide the kernels: ISA in use and the GEMM library.
        XCTAssertTrue(r.stdout.contains("cpu: ") && r.stdout.contains("gemm: "), r.stdout)
        XCTAssertFalse(r.stdout.contains("safe to delete"), r.stdout)
        XCTAssertEqual(report["orphans"] as? [String], [])

        // A run killed after its step-10 checkpoint: resume needs its files.
        let p = try startTraining(["--recipe", recipe, "--model", model])
        let killedDir = store.runDirectory(subjectID: subject.id!, runID: run.id! + 1)
        kill(p, once: { Self.hasCheckpoint(10, in: killedDir) })
        (r, report) = try doctor()
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(report["orphans"] as? [String], [])

        // Files no record or layout accounts for.
        let base = "subjects/\(subject.id!)"
        let strays = [
            "\(base)/runs/\(run.id!)/notes.txt",
            "\(base)/runs/\(run.id!)/validation/my-picture.png",
            "\(base)/runs/999/lora-step000010.safetensors",  // no such run
            "\(base)/class-images/\(keys[0])/extra.png",
            "subjects/998/photos/abc.jpg",  // no such subject
        ]
        for s in strays {
            let url = home.appendingPathComponent(s)
            try writeFile(Data("stray".utf8), to: url)
        }
        (r, report) = try doctor()
        XCTAssertEqual(r.status, 1, r.stdout + r.stderr)
        XCTAssertEqual(report["orphans"] as? [String], strays.sorted())
        for s in strays { XCTAssertTrue(r.stdout.contains(s), r.stdout) }
        XCTAssertTrue(r.stderr.contains("\(strays.count) problems"), r.stderr)
    }
}
