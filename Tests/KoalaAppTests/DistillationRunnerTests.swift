import Foundation
import KoalaApp
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import KoalaTraining
import XCTest

/// `DistillationRunner` on the tiny random pipeline as teacher and a shallower student
/// (one transformer block per stage): data encoding, training, resume, the output folder.
final class DistillationRunnerTests: AppTestCase {
    static let recipesDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("recipes")

    /// The tiny U-Net with one transformer block where it has two.
    func studentConfig() throws -> String {
        var c = try PipelinePreset.named("tiny").unet
        c.transformerLayersPerBlock = .many([.one(1), .one(1), .one(1)])
        let path = root.appendingPathComponent("student.json").path
        try JSONEncoder().encode(c).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Three photos with a kohya caption each.
    func captionedData() throws -> String {
        let dir = root.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (i, path) in try photos(3).enumerated() {
            let name = "img\(i)"
            try FileManager.default.moveItem(atPath: path, toPath: dir.appendingPathComponent("\(name).png").path)
            try "a photo of thing \(i)".write(to: dir.appendingPathComponent("\(name).txt"), atomically: true, encoding: .utf8)
        }
        return dir.path
    }

    func request(out: String = "distilled") throws -> DistillationRequest {
        DistillationRequest(teacherPath: Self.tinyModel, student: try studentConfig(), dataPath: try captionedData(),
                            recipePath: Self.recipesDir.appendingPathComponent("tiny-distill.toml").path,
                            outPath: root.appendingPathComponent(out).path)
    }

    func testWritesALoadablePipelineWithTheStudentUNet() throws {
        var r = try request()
        r.holdout = 1
        var steps: [DistillationProgress] = [], encoded = 0, gap: (Double, Double, Int)?
        let outcome = try DistillationRunner().run(r, resume: false) { e in
            if case .step(let p) = e { steps.append(p) }
            if case .encoded(let done, _) = e { encoded = done }
            if case .outputGap(let before, let after, let images, _) = e { gap = (before, after, images) }
        }
        let (before, after, heldOut) = try XCTUnwrap(gap)
        XCTAssertEqual(heldOut, 1)
        XCTAssertTrue(before > 0 && before.isFinite && after > 0 && after.isFinite, "\(before) \(after)")
        guard case .finished(let out) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(out.path, r.outPath)
        XCTAssertEqual(encoded, 3)
        XCTAssertEqual(steps.map(\.training.step), Array(1...8))
        XCTAssertTrue(steps.allSatisfy { $0.training.loss.isFinite && $0.feature > 0 })
        let pipeline = try StableDiffusionXLPipeline.load(from: r.outPath)
        XCTAssertEqual(pipeline.unet.config.transformerLayersPerBlock, .many([.one(1), .one(1), .one(1)]))
        // The U-Net is the last checkpoint's; the rest is the teacher's, unchanged.
        let last = try StateDict(files: [SafeTensorsFile(path: r.runDirectory
            .appendingPathComponent("unet-step000008/\(FullUNetWeights.weightsFile)").path)])
        for (key, p) in pipeline.unet.namedParameters() { XCTAssertEqual(p.toArray(), try last.tensor(key).toArray(), key) }
        for file in ["model_index.json", "vae/config.json", "text_encoder_2/config.json", "scheduler/scheduler_config.json"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: r.outPath).appendingPathComponent(file)),
                           try Data(contentsOf: TinyPipeline.folder.appendingPathComponent(file)), file)
        }
        XCTAssertThrowsError(try DistillationRunner().run(r, resume: false)) { error in
            XCTAssertEqual(error as? DistillationError, .outputExists(path: r.outPath))
        }
    }

    func testAStoppedRunResumesToTheSameStudent() throws {
        let straight = try request(out: "straight")
        _ = try DistillationRunner().run(straight, resume: false)

        var stopped = straight
        stopped.outPath = root.appendingPathComponent("stopped").path
        let cancel = TrainingCancellation()
        let outcome = try DistillationRunner().run(stopped, resume: false, cancellation: cancel) { e in
            if case .step(let p) = e, p.training.step == 3 { cancel.cancel() }
        }
        XCTAssertEqual(outcome, .interrupted(step: 3))
        XCTAssertFalse(FileManager.default.fileExists(atPath: stopped.outPath))
        XCTAssertThrowsError(try DistillationRunner().run(stopped, resume: false)) { error in
            XCTAssertEqual(error as? DistillationError, .runExists(runDirectory: stopped.runDirectory.path))
        }
        var resumedFrom: Int??
        _ = try DistillationRunner().run(stopped, resume: true) { e in
            if case .resuming(let step) = e { resumedFrom = step }
        }
        XCTAssertEqual(resumedFrom, .some(3))
        let a = try StableDiffusionXLPipeline.load(from: straight.outPath).unet.namedParameters()
        let b = try StableDiffusionXLPipeline.load(from: stopped.outPath).unet.namedParameters()
        XCTAssertEqual(a.map(\.0), b.map(\.0))
        for ((key, x), (_, y)) in zip(a, b) { XCTAssertEqual(x.toArray(), y.toArray(), key) }
    }

    func testBadInputIsRefusedBeforeAnythingIsWritten() throws {
        var r = try request()
        XCTAssertThrowsError(try DistillationRunner().run(r, resume: true)) { error in
            XCTAssertEqual(error as? DistillationError, .nothingToResume(runDirectory: r.runDirectory.path))
        }
        r.student = "koala-3b"
        XCTAssertThrowsError(try DistillationRunner().run(r, resume: false)) { error in
            XCTAssertTrue("\(error)".contains("unknown student 'koala-3b'"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: r.runDirectory.path))
        r.holdout = 3
        XCTAssertThrowsError(try DistillationRunner().run(r, resume: false)) { error in
            XCTAssertEqual(error as? DistillationError, .holdoutTooLarge(holdout: 3, images: 3))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: r.runDirectory.path))
        r.holdout = 0
        r.teacherPath = root.path
        XCTAssertThrowsError(try DistillationRunner().run(r, resume: false)) { error in
            XCTAssertEqual(error as? DistillationError, .teacherMissing(path: root.path))
        }
    }
}
