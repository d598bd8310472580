import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining
import XCTest

/// Validation images are what `generate` draws with the same parameters (generate is
/// tested against diffusers in Tests/KoalaDiffusionTests/TextToImageTests.swift), and
/// `checkpoint.keep_last` picks every file of the older checkpoints and nothing else.
final class ValidationSamplerTests: XCTestCase {
    /// Loaded once for the class, on first use.
    nonisolated(unsafe) static let pipeline = TinyPipeline.load()

    func recipe(_ edit: (inout TrainingRecipe) -> Void) -> TrainingRecipe {
        var r = TrainingRecipe()
        r.data.resolution = 64
        r.validation.prompts = ["a photo of {token} {class} on the beach", "{token} {class} in the snow"]
        r.validation.steps = 3
        r.validation.seed = 7
        edit(&r)
        return r
    }

    /// Every image the sampler draws equals `generate` with its parameters, value for value.
    func assertMatchesGenerate(_ recipe: TrainingRecipe, file: StaticString = #filePath, line: UInt = #line) throws {
        let pipeline = Self.pipeline
        let sampler = try ValidationSampler(recipe: recipe, texts: ValidationTexts(recipe.validation, token: "sks", className: "toy"),
                                            pipeline: pipeline)
        var drawn: [ValidationImage] = []
        try sampler.draw(unet: pipeline.unet, step: 12) { drawn.append($0) }
        let count = recipe.validation.imagesPerPrompt
        XCTAssertEqual(drawn.count, 2 * count, file: file, line: line)
        XCTAssertEqual(drawn.map(\.fileName).first, "step000012-p1-1.png", file: file, line: line)
        XCTAssertEqual(drawn.first?.parameters.prompt, "a photo of sks toy on the beach", file: file, line: line)
        for image in drawn {
            let expected = try pipeline.generate(image.parameters).images.contiguous()
            let n = 3 * 64 * 64
            let row = Array(UnsafeBufferPointer(start: expected.data + image.imageIndex * n, count: n))
            XCTAssertEqual(image.pixels, row, "\(image.fileName) differs from generate", file: file, line: line)
        }
    }

    func testImagesEqualGenerateWithoutNegativePrompt() throws {
        try assertMatchesGenerate(recipe { _ in })
    }

    func testImagesEqualGenerateWithNegativePromptEulerAndTwoImagesPerPrompt() throws {
        try assertMatchesGenerate(recipe { r in
            r.validation.negativePrompt = "blurry {class}"
            r.validation.scheduler = .euler
            r.validation.karras = true
            r.validation.imagesPerPrompt = 2
            r.validation.guidance = 5
            r.train.rng = .native
        })
    }

    func testNegativePromptTemplateIsFilled() {
        var v = TrainingRecipe.ValidationSection()
        v.prompts = ["{token} {class}"]
        v.negativePrompt = "another {class}, not {token}"
        XCTAssertEqual(ValidationTexts(v, token: "sks", className: "dog"),
                       ValidationTexts(prompts: ["sks dog"], negativePrompt: "another dog, not sks"))
    }

    func testDueEveryNStepsAndAtTheEnd() throws {
        let every5 = try ValidationSampler(recipe: recipe { $0.validation.every = 5 }, texts: ValidationTexts(prompts: ["x"]), pipeline: Self.pipeline)
        XCTAssertEqual((1...12).filter { every5.isDue(step: $0, totalSteps: 12) }, [5, 10, 12])
        let endOnly = try ValidationSampler(recipe: recipe { $0.validation.every = 0 }, texts: ValidationTexts(prompts: ["x"]), pipeline: Self.pipeline)
        XCTAssertEqual((1...12).filter { endOnly.isDue(step: $0, totalSteps: 12) }, [12])
        let none = try ValidationSampler(recipe: recipe { $0.validation.every = 5 }, texts: ValidationTexts(prompts: []), pipeline: Self.pipeline)
        XCTAssertFalse(none.isDue(step: 12, totalSteps: 12))
    }

    func testResolutionTheModelCannotDrawIsAnError() {
        // The tiny U-Net halves the latents twice: sides must be multiples of 32.
        XCTAssertThrowsError(try ValidationSampler(recipe: recipe { $0.data.resolution = 72 }, texts: ValidationTexts(prompts: ["x"]),
                                                   pipeline: Self.pipeline)) { XCTAssertTrue("\($0)".contains("multiples of"), "\($0)") }
    }

    func testRetentionPicksEveryFileOfOlderCheckpointsOnly() throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("kb-keep-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("validation"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let names = ["state-step000005.json", "lora-step000005.safetensors", "lora-step000005.kohya.safetensors",
                     "optimizer-step000005.safetensors", "lora-step0000050.safetensors", "notes-step000005x.txt",
                     "state-step000010.json", "lora-step000010.safetensors", "optimizer-step000010.safetensors",
                     "state-step000015.json", "lora-step000015.safetensors", "validation/step000005-p1-1.png"]
        for name in names { try Data("x".utf8).write(to: dir.appendingPathComponent(name)) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("unet-step000005"), withIntermediateDirectories: true)
        try Data("w".utf8).write(to: dir.appendingPathComponent("unet-step000005/diffusion_pytorch_model.safetensors"))

        let expired = CheckpointRetention.expired(in: dir, keep: 2)
        XCTAssertEqual(expired.map(\.step), [5])
        XCTAssertEqual(expired.first?.files.map(\.lastPathComponent),
                       ["lora-step000005.kohya.safetensors", "lora-step000005.safetensors", "optimizer-step000005.safetensors",
                        "state-step000005.json", "unet-step000005"])
        XCTAssertEqual(CheckpointRetention.expired(in: dir, keep: 1).map(\.step), [5, 10])
        XCTAssertEqual(CheckpointRetention.expired(in: dir, keep: 3).map(\.step), [])

        try CheckpointRetention.deleteFiles(expired[0])
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        XCTAssertEqual(left, ["lora-step0000050.safetensors", "lora-step000010.safetensors", "lora-step000015.safetensors",
                              "notes-step000005x.txt", "optimizer-step000010.safetensors", "state-step000010.json",
                              "state-step000015.json", "validation"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("validation/step000005-p1-1.png").path))
    }
}
