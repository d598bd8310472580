import Foundation
import KoalaDiffusion
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining
import XCTest

/// A DreamBooth trainer on the tiny pipeline and two small photos, for tests that train
/// a few steps in-process.
enum TinyTrainerRun {
    /// 64 px, LoRA rank 4, a checkpoint every step, no validation.
    static func recipe(steps: Int) -> TrainingRecipe {
        var r = TrainingRecipe()
        r.data.resolution = 64
        r.data.aspectBuckets = false
        r.train.maxSteps = steps
        r.train.seed = 3
        r.optim.learningRate = 1e-2
        r.checkpoint.every = 1
        return r
    }

    static func trainer(_ recipe: TrainingRecipe, validation: ValidationTexts? = nil,
                        pipeline: StableDiffusionXLPipeline = TinyPipeline.load()) throws -> DreamBoothTrainer {
        let photos = [AspectBucketTests.gradient(width: 64, height: 64), AspectBucketTests.gradient(width: 96, height: 64)]
        let images = try DreamBoothDataset.prepare(photos, data: recipe.data, seed: recipe.train.seed, pixelMultiple: 32)
        return try DreamBoothTrainer(recipe: recipe, pipeline: pipeline, images: images, instancePrompt: "a photo of sks toy",
                                     validation: validation)
    }

    /// A fresh folder, removed when the test ends.
    static func directory(_ test: XCTestCase) -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kb-trainfeat-\(UUID().uuidString)")
        test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    /// The values of each parameter, in the optimizer's order.
    static func values(_ parameters: [Tensor]) -> [[Float]] { parameters.map { $0.contiguous().toArray() } }

    /// The tensors `name.0`, `name.1`, … of a state file (EMA shadow, raw weights).
    static func tensors(_ prefix: String, in url: URL) throws -> [[Float]] {
        let st = try OptimizerState.load(from: url.path)
        let n = try st.int("param_count")
        return try (0..<n).map { try XCTUnwrap(st.tensors["\(prefix).\($0)"]).toArray() }
    }

    /// Parses `toml` expecting a RecipeError naming `key` whose text holds every fragment.
    static func assertError(_ toml: String, key: String, contains fragments: [String],
                            file: StaticString = #filePath, line: UInt = #line) {
        do {
            let r = try TrainingRecipe.parse(toml: toml)
            XCTFail("expected an error, parsed \(r)", file: file, line: line)
        } catch let e as RecipeError {
            XCTAssertEqual(e.key, key, "\(e)", file: file, line: line)
            for f in fragments { XCTAssertTrue(e.description.contains(f), "'\(e)' lacks '\(f)'", file: file, line: line) }
        } catch {
            XCTFail("expected a RecipeError, got \(error)", file: file, line: line)
        }
    }
}
