import Foundation
import KoalaApp
import KoalaDiffusion
import KoalaImageIO
import KoalaStore
import KoalaTraining
import XCTest

/// The training use case in-process on the tiny pipeline (`model init --preset tiny`):
/// the loss falls, checkpoints are written and recorded, a cancelled run stops at a step
/// boundary with a checkpoint, its resume ends where an uninterrupted run ends, and a
/// failure is recorded with its message. (The CLI's mapping of the same events to lines
/// and exit codes is tested through the executable in Tests/KoalaCLITests.)
final class TrainingRunnerTests: XCTestCase {
    nonisolated(unsafe) static var modelRoot: URL!
    static var model: String { modelRoot.appendingPathComponent("tiny").path }
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var home: URL!
    var store: SubjectStore!

    override class func setUp() {
        super.setUp()
        modelRoot = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-app-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: modelRoot, withIntermediateDirectories: true)
        try! StableDiffusionXLPipeline.initialize(preset: try! PipelinePreset.named("tiny"), seed: 0, at: model)
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(at: modelRoot)
        super.tearDown()
    }

    override func setUpWithError() throws {
        home = Self.modelRoot.appendingPathComponent("home-\(UUID().uuidString)")
        store = try SubjectStore(home: home)
        let dir = Self.root.appendingPathComponent("subjects/robot-toy")
        let photos = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".jpg") }.sorted().map { name in
            let path = dir.appendingPathComponent(name).path
            let image = try RGBImage.load(path: path)
            return PhotoInput(sourcePath: path, width: image.width, height: image.height, fileExtension: "jpg")
        }
        _ = try store.createSubject(name: "robo", token: "sks", classNoun: "toy", photos: photos)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: home) }

    /// recipes/tiny.toml, `steps` steps with a checkpoint every `every`, no validation images.
    func recipe(steps: Int, every: Int) throws -> TrainingRecipe {
        var r = try TrainingRecipe.load(path: Self.root.appendingPathComponent("recipes/tiny.toml").path)
        r.train.maxSteps = steps
        r.train.seed = 1
        r.optim.learningRate = 3e-2
        r.checkpoint.every = every
        r.checkpoint.keepLast = nil
        r.validation.prompts = []
        r.validation.every = 0
        return r
    }

    /// The events of a run, in order.
    final class Events: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [TrainingEvent] = []
        /// Called with each event as it arrives (on the training thread).
        var onEvent: (TrainingEvent) -> Void = { _ in }

        var all: [TrainingEvent] { lock.lock(); defer { lock.unlock() }; return list }
        var sink: TrainingEventSink {
            { [self] e in
                lock.lock()
                list.append(e)
                lock.unlock()
                onEvent(e)
            }
        }
        var losses: [Double] { all.compactMap { if case .step(let p) = $0 { p.loss } else { nil } } }
        var evaluationLosses: [Double] { all.compactMap { if case .evaluationLoss(let l, _) = $0 { l } else { nil } } }
        var savedSteps: [Int] { all.compactMap { if case .checkpointSaved(let s, _) = $0 { s } else { nil } } }
    }

    func start(_ recipe: TrainingRecipe, _ events: Events, cancellation: TrainingCancellation = TrainingCancellation()) throws -> TrainingOutcome {
        let pipeline = try StableDiffusionXLPipeline.load(from: Self.model)
        return try TrainingRunner(store: store).start(
            TrainingRequest(subject: "robo", recipe: .recipe(recipe), modelPath: Self.model, pipeline: pipeline),
            cancellation: cancellation, events: events.sink)
    }

    func testTrainingLowersTheLossAndRecordsItsCheckpoints() throws {
        let events = Events()
        let outcome = try start(try recipe(steps: 12, every: 6), events)
        guard case .finished(let run) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(events.losses.count, 12)
        let eval = events.evaluationLosses
        XCTAssertEqual(eval.count, 2)
        XCTAssertLessThan(eval[1], eval[0] * 0.97, "the fixed-noise evaluation loss should fall: \(eval)")

        let stored = try XCTUnwrap(store.run(id: run.id!))
        XCTAssertEqual(stored.status, .finished)
        XCTAssertEqual(stored.stepsDone, 12)
        XCTAssertEqual(stored.lastLoss, events.losses.last)
        XCTAssertGreaterThan(stored.elapsedSeconds, 0)
        XCTAssertEqual(stored.baseModelFingerprint, try ModelFingerprint.of(folder: Self.model))
        XCTAssertEqual(events.savedSteps, [6, 12])
        let checkpoints = try store.checkpoints(runID: run.id!)
        XCTAssertEqual(checkpoints.map(\.step), [6, 12])
        let dir = store.runDirectory(subjectID: run.subjectId, runID: run.id!)
        for c in checkpoints {
            XCTAssertEqual(store.url(forRelativePath: c.path).standardizedFileURL,
                           dir.appendingPathComponent("lora-\(CheckpointName(step: c.step).tag).safetensors").standardizedFileURL)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent(CheckpointName(step: c.step).stateFile).path))
        }
        if case .finished(let id, let steps, _)? = events.all.last {
            XCTAssertEqual(id, run.id)
            XCTAssertEqual(steps, 12)
        } else { XCTFail("the last event is not `finished`: \(String(describing: events.all.last))") }
    }

    /// Cancelled during step 3 of 6: the run stops once step 3 is done, with its
    /// checkpoint, marked interrupted; resumed, it ends with the weights of a run that
    /// was never stopped.
    func testCancelledRunStopsAtAStepBoundaryAndItsResumeEqualsAnUninterruptedRun() throws {
        let recipe = try recipe(steps: 6, every: 4)
        let whole = Events()
        let uninterrupted = try start(recipe, whole).run

        let cancellation = TrainingCancellation()
        let first = Events()
        first.onEvent = { if case .step(let p) = $0, p.step == 3 { cancellation.cancel() } }
        let outcome = try start(recipe, first, cancellation: cancellation)
        guard case .interrupted(let run, let step) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(step, 3)
        XCTAssertEqual(first.losses.count, 3, "no step after the one it was cancelled in")
        XCTAssertEqual(first.savedSteps, [3], "the interrupted step is checkpointed")
        let stopped = try XCTUnwrap(store.run(id: run.id!))
        XCTAssertEqual(stopped.status, .interrupted)
        XCTAssertEqual(stopped.stepsDone, 3)
        XCTAssertEqual(try store.checkpoints(runID: run.id!).map(\.step), [3])

        let resumed = Events()
        let pipeline = try StableDiffusionXLPipeline.load(from: Self.model)
        let end = try TrainingRunner(store: store).resume(subject: "robo", pipeline: pipeline, events: resumed.sink)
        guard case .finished(let done) = end else { return XCTFail("\(end)") }
        XCTAssertEqual(done.id, run.id)
        if case .resuming(let id, let from)? = resumed.all.first {
            XCTAssertEqual(id, run.id)
            XCTAssertEqual(from, 3)
        } else { XCTFail("no `resuming` event first: \(resumed.all)") }
        XCTAssertEqual(resumed.losses, Array(whole.losses.suffix(3)))
        XCTAssertEqual(try store.run(id: run.id!)?.status, .finished)
        XCTAssertEqual(try store.checkpoints(runID: run.id!).map(\.step), [3, 4, 6])
        let a = store.runDirectory(subjectID: uninterrupted.subjectId, runID: uninterrupted.id!)
        let b = store.runDirectory(subjectID: run.subjectId, runID: run.id!)
        for name in ["lora-step000006.safetensors", "optimizer-step000006.safetensors"] {
            XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent(name)), try Data(contentsOf: b.appendingPathComponent(name)), name)
        }
    }

    func testAFailingRunIsMarkedFailedWithItsMessage() throws {
        _ = try store.createSubject(name: "empty", token: "sks", classNoun: "toy", photos: [])
        let events = Events()
        let runner = TrainingRunner(store: store)
        XCTAssertThrowsError(try runner.start(TrainingRequest(subject: "empty", recipe: .recipe(try recipe(steps: 2, every: 1)),
                                                              modelPath: Self.model), events: events.sink)) { error in
            XCTAssertEqual(error as? TrainingRunError, .noPhotos(subject: "empty"))
        }
        let subject = try XCTUnwrap(store.subject(named: "empty"))
        let run = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        XCTAssertEqual(run.status, .failed)
        XCTAssertEqual(run.errorMessage, "subject empty has no photos")
        if case .failed(let id, let message)? = events.all.last {
            XCTAssertEqual(id, run.id)
            XCTAssertEqual(message, run.errorMessage)
        } else { XCTFail("the last event is not `failed`: \(events.all)") }
        // A missing model folder is refused before any run is recorded.
        XCTAssertThrowsError(try runner.start(TrainingRequest(subject: "robo", recipe: .recipe(try recipe(steps: 2, every: 1)),
                                                              modelPath: home.appendingPathComponent("nowhere").path), events: { _ in })) {
            XCTAssertEqual($0 as? TrainingRunError, .modelFolderMissing(path: self.home.appendingPathComponent("nowhere").path))
        }
        XCTAssertEqual(try store.runs(subjectID: try XCTUnwrap(store.subject(named: "robo")).id!).count, 0)
    }

    func testNothingToResumeIsRefused() throws {
        XCTAssertThrowsError(try TrainingRunner(store: store).resume(subject: "robo", events: { _ in })) {
            XCTAssertEqual($0 as? TrainingRunError, .nothingToResume(subject: "robo"))
        }
    }
}
