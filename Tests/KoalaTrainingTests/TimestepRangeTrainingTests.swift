import Foundation
import KoalaDiffusion
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining
import XCTest

/// `train.min_timestep`/`max_timestep` and `train.debiased_estimation` (sd-scripts'
/// `--min_timestep`/`--max_timestep` and `--debiased_estimation_loss`) from the recipe
/// to the trainer's draws and loss.
final class TimestepRangeTrainingTests: XCTestCase {
    func testKeysParseValidateAndRoundTrip() throws {
        let defaults = TrainingRecipe().train
        XCTAssertEqual(defaults.minTimestep, 0)
        XCTAssertNil(defaults.maxTimestep, "unset: the model's num_train_timesteps")
        XCTAssertFalse(defaults.debiasedEstimation)

        let r = try TrainingRecipe.parse(toml: """
            [train]
            min_timestep = 200
            max_timestep = 800
            debiased_estimation = true
            min_snr_gamma = 5
            """)
        XCTAssertEqual(r.train.minTimestep, 200)
        XCTAssertEqual(r.train.maxTimestep, 800)
        XCTAssertTrue(r.train.debiasedEstimation)
        let text = r.tomlString()
        for line in ["min_timestep = 200", "max_timestep = 800", "debiased_estimation = true"] {
            XCTAssertTrue(text.contains(line), text)
        }
        XCTAssertEqual(try TrainingRecipe.parse(toml: text), r, text)
        XCTAssertFalse(TrainingRecipe().tomlString().contains("max_timestep"), "an unset max_timestep is not written")
        XCTAssertEqual(try TrainingRecipe.parse(toml: "[train]\nmax_timestep = 1000").train.maxTimestep, 1000)
    }

    func testOutOfRangeTimestepsNameTheKeyAndTheFix() {
        TinyTrainerRun.assertError("[train]\nmin_timestep = -1", key: "train.min_timestep", contains: ["in 0...999", "got -1"])
        TinyTrainerRun.assertError("[train]\nmin_timestep = 1000", key: "train.min_timestep", contains: ["in 0...999"])
        TinyTrainerRun.assertError("[train]\nmax_timestep = 0", key: "train.max_timestep", contains: ["in 1...1000", "got 0"])
        TinyTrainerRun.assertError("[train]\nmax_timestep = 1001", key: "train.max_timestep", contains: ["in 1...1000"])
        TinyTrainerRun.assertError("[train]\nmin_timestep = 500\nmax_timestep = 500", key: "train.min_timestep",
                                   contains: ["min_timestep = 500 must be below train.max_timestep = 500", "lower min_timestep"])
        TinyTrainerRun.assertError("[train]\ndebiased_estimation = 1", key: "train.debiased_estimation", contains: ["1"])
    }

    /// Every timestep of a run, across micro-batches and accumulation, lies in the range
    /// (and the range is not collapsed to one value).
    func testEveryTimestepOfARunIsInsideTheRange() throws {
        var recipe = TinyTrainerRun.recipe(steps: 4)
        recipe.train.batchSize = 2
        recipe.train.gradientAccumulation = 2
        recipe.checkpoint.every = 0
        recipe.train.minTimestep = 300
        recipe.train.maxTimestep = 340
        let trainer = try TinyTrainerRun.trainer(recipe)
        var drawn: [Int] = []
        trainer.timestepsDrawn = { drawn += $0 }
        try trainer.train(directory: TinyTrainerRun.directory(self))
        XCTAssertEqual(drawn.count, 4 * 2 * 2)
        XCTAssertTrue(drawn.allSatisfy { (300..<340).contains($0) }, "\(drawn)")
        XCTAssertGreaterThan(Set(drawn).count, 4, "\(drawn)")
    }

    /// The whole range written out draws exactly what a recipe without the keys draws, and
    /// trains to the same bytes.
    func testTheDefaultRangeDrawsWhatARecipeWithoutTheKeysDraws() throws {
        func run(_ recipe: TrainingRecipe) throws -> ([Int], Data) {
            let trainer = try TinyTrainerRun.trainer(recipe)
            var drawn: [Int] = []
            trainer.timestepsDrawn = { drawn += $0 }
            let dir = TinyTrainerRun.directory(self)
            try trainer.train(directory: dir)
            return (drawn, try Data(contentsOf: dir.appendingPathComponent("lora-step000003.safetensors")))
        }
        var plain = TinyTrainerRun.recipe(steps: 3)
        plain.checkpoint.every = 0
        var explicit = plain
        explicit.train.minTimestep = 0
        explicit.train.maxTimestep = 1000
        let a = try run(plain), b = try run(explicit)
        XCTAssertEqual(a.0, b.0)
        XCTAssertEqual(a.1, b.1)
        XCTAssertGreaterThan(Set(a.0).count, 1)
    }

    /// The recipe allows up to 1000; a model with fewer training timesteps refuses more.
    func testARangeBeyondTheModelsTimestepsIsRefused() throws {
        func shortSchedule() -> StableDiffusionXLPipeline {
            let p = TinyPipeline.load()
            var config = p.schedulerConfig
            config.numTrainTimesteps = 500
            return StableDiffusionXLPipeline(unet: p.unet, vae: p.vae, textEncoder: p.textEncoder, textEncoder2: p.textEncoder2,
                                             tokenizer: p.tokenizer, tokenizer2: p.tokenizer2, schedulerConfig: config)
        }
        var recipe = TinyTrainerRun.recipe(steps: 1)
        recipe.train.maxTimestep = 501
        XCTAssertThrowsError(try TinyTrainerRun.trainer(recipe, pipeline: shortSchedule())) {
            XCTAssertTrue("\($0)".contains("train.max_timestep = 501 exceeds this model's 500 training timesteps"), "\($0)")
        }
        recipe.train.maxTimestep = nil
        recipe.train.minTimestep = 500
        XCTAssertThrowsError(try TinyTrainerRun.trainer(recipe, pipeline: shortSchedule())) {
            XCTAssertTrue("\($0)".contains("train.min_timestep = 500"), "\($0)")
        }
        recipe.train.maxTimestep = 500
        recipe.train.minTimestep = 499
        XCTAssertNoThrow(try TinyTrainerRun.trainer(recipe, pipeline: shortSchedule()))
    }

    /// With one timestep per example the weighted loss is the plain loss times the weight
    /// of that timestep: debiased alone, and Min-SNR then debiased as sd-scripts applies them.
    func testDebiasedEstimationWeightsEachExampleAsSDScripts() throws {
        func evaluation(_ configure: (inout TrainingRecipe) -> Void) throws -> (Double, DreamBoothTrainer) {
            var r = TinyTrainerRun.recipe(steps: 1)
            configure(&r)
            let t = try TinyTrainerRun.trainer(r)
            return (t.evaluationLoss(timestepsPerImage: 1), t)
        }
        let (plain, trainer) = try evaluation { _ in }
        let (debiased, _) = try evaluation { $0.train.debiasedEstimation = true }
        let (both, _) = try evaluation { $0.train.debiasedEstimation = true; $0.train.minSNRGamma = 5 }
        // evaluationLoss(timestepsPerImage: 1) draws every photo at t = n / 2.
        let t = [trainer.noiseSchedule.numTrainTimesteps / 2]
        let d = Double(trainer.noiseSchedule.debiasedEstimationWeights(timesteps: t, predictionType: trainer.predictionType)[0])
        let m = Double(trainer.noiseSchedule.minSNRWeights(timesteps: t, gamma: 5, predictionType: trainer.predictionType)[0])
        XCTAssertNotEqual(d, 1, accuracy: 1e-3)
        XCTAssertEqual(debiased, plain * d, accuracy: plain * d * 1e-5)
        XCTAssertEqual(both, plain * m * d, accuracy: plain * m * d * 1e-5)
    }
}
