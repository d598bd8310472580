import Foundation
import KoalaApp
import KoalaDiffusion
import KoalaImageIO
import KoalaStore
import KoalaTensor
import XCTest

/// Generation through the application layer on the tiny random pipeline: a subject's
/// checkpoint is found and applied, each image is written with its text chunks and
/// recorded; requests out of bounds are refused before anything is written.
final class GenerationUseCaseTests: AppTestCase {
    /// A subject "rex" with a finished run whose full fine-tune checkpoint is `weights`
    /// (default: the tiny model's own U-Net weights).
    func trainedSubject(weights: ((URL) throws -> Void)? = nil) throws -> (store: SubjectStore, run: TrainingRun, checkpoint: Checkpoint) {
        _ = try subjects.create(newSubject(photos: try photos(3)))
        let store = try location.open()
        let rex = try store.requireSubject(named: "rex")
        let run = try store.createRun(TrainingRun(subjectId: rex.id!, status: .finished, baseModelPath: Self.tinyModel,
                                                  baseModelFingerprint: "test", recipe: "", totalSteps: 1, stepsDone: 1))
        let unet = store.runDirectory(subjectID: rex.id!, runID: run.id!).appendingPathComponent("checkpoint-1/unet")
        try FileManager.default.createDirectory(at: unet.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: URL(fileURLWithPath: Self.tinyModel).appendingPathComponent("unet"), to: unet)
        let file = unet.appendingPathComponent("diffusion_pytorch_model.safetensors")
        try weights?(file)
        let checkpoint = try store.recordCheckpoint(runID: run.id!, step: 1, kind: .full, file: file)
        return (store, run, checkpoint)
    }

    func request(subject: String? = "rex") -> GenerationRequest {
        var r = GenerationRequest(prompt: "a photo of {token} {class}")
        r.subject = subject
        r.model = subject == nil ? Self.tinyModel : nil
        r.parameters.steps = 2
        r.parameters.width = 64
        r.parameters.height = 64
        r.parameters.seed = 7
        r.parameters.scheduler = .euler
        return r
    }

    func pngs(under dir: URL) -> [String] {
        (FileManager.default.enumerator(atPath: dir.path)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".png") && !$0.contains("photos") }
    }

    func testSubjectGenerationWritesPNGsWithChunksAndRecordsThem() throws {
        let (store, run, checkpoint) = try trainedSubject()
        var r = request()
        r.parameters.count = 2
        var events: [GenerationEvent] = []
        let outcome = try GenerationUseCase(location: location).run(r) { events.append($0) }

        XCTAssertEqual(outcome.imagePaths.count, 2)
        XCTAssertEqual(outcome.recorded.count, 2)
        let rex = try store.requireSubject(named: "rex")
        let history = try store.generations(subjectID: rex.id!)
        XCTAssertEqual(Set(history.map(\.imagePath)), Set(try outcome.imagePaths.map { try store.relativePath(of: URL(fileURLWithPath: $0)) }))
        for g in history {
            XCTAssertEqual(g.runId, run.id)
            XCTAssertEqual(g.checkpointId, checkpoint.id)
            XCTAssertEqual(g.prompt, "a photo of sks dog", "{token} and {class} are the subject's")
            XCTAssertEqual([g.width, g.height, g.steps], [64, 64, 2])
            XCTAssertEqual(g.scheduler, "euler")
        }
        for (i, path) in outcome.imagePaths.enumerated() {
            XCTAssertTrue(path.hasPrefix(store.generationDirectory(subjectID: rex.id!).path), path)
            let decoded = try PNGCodec.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))))
            XCTAssertEqual([decoded.image.width, decoded.image.height], [64, 64])
            let text = Dictionary(try PNGCodec.readText(path: path).map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            XCTAssertEqual(text["prompt"], "a photo of sks dog")
            XCTAssertEqual(text["subject"], "rex")
            XCTAssertEqual(text["seed"], "7")
            XCTAssertEqual(text["index"], "\(i + 1) of 2")
            XCTAssertEqual(text["model"], Self.tinyModel)
            let parameters = try XCTUnwrap(text["parameters"])
            XCTAssertTrue(parameters.hasPrefix("a photo of sks dog\nSteps: 2, Sampler: Euler,"), parameters)
            XCTAssertTrue(parameters.contains("Seed: 7, Size: 64x64"), parameters)
        }

        // Events in order: load, checkpoint, 2 steps per image, each image written then recorded.
        guard case .loadingModel(let model) = events.first else { return XCTFail("\(events)") }
        XCTAssertEqual(model, Self.tinyModel)
        guard case .usingCheckpoint(let name, let runID, 1, .full) = events[1] else { return XCTFail("\(events[1])") }
        XCTAssertEqual(name, "rex")
        XCTAssertEqual(runID, run.id)
        let kinds = events.dropFirst(2).map { e -> String in
            switch e {
            case .step(let index, 2, let p): return "step \(index) \(p.step)/\(p.total)"
            case .wroteImage(let index, _): return "wrote \(index)"
            case .recorded: return "recorded"
            default: return "\(e)"
            }
        }
        XCTAssertEqual(kinds, ["step 0 1/2", "step 0 2/2", "wrote 0", "recorded", "step 1 1/2", "step 1 2/2", "wrote 1", "recorded"])
    }

    /// The checkpoint is really loaded: weights that do not fit the U-Net fail the request
    /// before any image is drawn.
    func testACheckpointThatDoesNotFitIsRefused() throws {
        _ = try trainedSubject { file in
            try FileManager.default.removeItem(at: file)
            try SafeTensors.write(["not_a_unet_weight": Tensor.zeros([2])], to: file.path)
        }
        XCTAssertThrowsError(try GenerationUseCase(location: location).run(request())) { error in
            guard case .checkpointMismatch(let path, let report) = error as? GenerationRequestError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("checkpoint-1/unet/diffusion_pytorch_model.safetensors"), path)
            XCTAssertTrue(report.contains("not_a_unet_weight"), report)
        }
        XCTAssertEqual(pngs(under: location.home), [])
    }

    func testImagesOutsideTheDataDirectoryAreWrittenButNotRecorded() throws {
        let (store, _, _) = try trainedSubject()
        var r = request()
        r.output = root.appendingPathComponent("out.png").path
        var notRecorded: [String] = []
        try GenerationUseCase(location: location).run(r) { if case .notRecorded(_, let path) = $0 { notRecorded.append(path) } }
        XCTAssertEqual(notRecorded, [r.output!])
        XCTAssertTrue(FileManager.default.fileExists(atPath: r.output!))
        XCTAssertEqual(try store.generations(subjectID: try store.requireSubject(named: "rex").id!).count, 0)
    }

    func testOutOfBoundsRequestsAreRefusedBeforeAnythingIsWritten() throws {
        let out = root.appendingPathComponent("out.png").path
        func refused(_ change: (inout GenerationRequest) -> Void, _ expected: GenerationRequestError? = nil,
                     matching: (GenerationRequestError) -> Bool = { _ in true }, file: StaticString = #filePath, line: UInt = #line) {
            var r = request(subject: nil)
            r.output = out
            change(&r)
            XCTAssertThrowsError(try GenerationUseCase(location: location).run(r), file: file, line: line) {
                guard let e = $0 as? GenerationRequestError else { return XCTFail("\($0)", file: file, line: line) }
                if let expected { XCTAssertEqual(e, expected, file: file, line: line) }
                XCTAssertTrue(matching(e), "\(e)", file: file, line: line)
            }
        }
        refused({ $0.parameters.guidance = .nan }, matching: { if case .notFinite(.guidance, let v) = $0 { return v.isNaN } else { return false } })
        refused({ $0.loraScale = .infinity; $0.lora = "/x.safetensors" }, .notFinite(.loraScale, .infinity))
        refused({ $0.parameters.height = 8192 }, .sideOverLimit(.height, 8192))
        refused({ $0.parameters.width = 60 }, .sideNotMultipleOf8(.width, 60))
        refused({ $0.parameters.count = GenerationLimits.maxCount + 1 }, .tooManyImages(GenerationLimits.maxCount + 1))
        refused({ $0.parameters.steps = 0 }, .tooFewSteps)
        refused({ $0.parameters.karras = true; $0.parameters.scheduler = .ddim }, .karrasWithDDIM)
        refused({ $0.model = nil }, .noModel)
        refused({ $0.runID = 3 }, .runWithoutSubject)
        refused({ $0.output = "/no/such/folder/out.png" }, .outputFolderMissing(path: "/no/such/folder/out.png", folder: "/no/such/folder"))
        refused({ $0.model = "/no/such/model" }, .modelMissing(path: "/no/such/model"))
        // Starting latents of the wrong shape, after the model is loaded.
        let latents = root.appendingPathComponent("latents.safetensors").path
        try? SafeTensors.write(["latents": Tensor.zeros([1, 4, 4, 4])], to: latents)
        refused({ $0.latents = latents }, matching: { e in
            guard case .latentsShape(latents, [1, 4, 4, 4], let expected) = e else { return false }
            return expected.count == 4 && expected[0] == 1 && expected[1] == 4
        })
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertFalse(FileManager.default.fileExists(atPath: location.home.path), "a model request opens no store")
    }
}
