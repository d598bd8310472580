import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
@testable import KoalaTraining
import XCTest

/// `[ema]` from the recipe through the trainer: the average is diffusers' `EMAModel` over
/// the trained weights' trajectory, checkpoints carry it and resume restores it, and
/// `ema.use_for` decides what the exported files and validation images use.
final class EMATrainingTests: XCTestCase {
    func testKeysParseValidateAndRoundTrip() throws {
        let d = TrainingRecipe().ema
        XCTAssertFalse(d.enabled)
        XCTAssertEqual(d.decay, 0.9999)
        XCTAssertEqual(d.minDecay, 0)
        XCTAssertEqual(d.updateAfterStep, 0)
        XCTAssertFalse(d.useEMAWarmup)
        XCTAssertEqual(d.invGamma, 1)
        XCTAssertEqual(d.power, 2.0 / 3.0)
        XCTAssertEqual(d.updateEvery, 1)
        XCTAssertEqual(d.useFor, .both)

        let r = try TrainingRecipe.parse(toml: """
            [ema]
            enabled = true
            decay = 0.99
            min_decay = 0.5
            update_after_step = 10
            use_ema_warmup = true
            inv_gamma = 2
            power = 0.75
            update_every = 4
            use_for = "validation"
            """)
        XCTAssertEqual(r.ema.enabled, true)
        XCTAssertEqual(r.ema.decay, 0.99)
        XCTAssertEqual(r.ema.minDecay, 0.5)
        XCTAssertEqual(r.ema.updateAfterStep, 10)
        XCTAssertTrue(r.ema.useEMAWarmup)
        XCTAssertEqual(r.ema.invGamma, 2)
        XCTAssertEqual(r.ema.power, 0.75)
        XCTAssertEqual(r.ema.updateEvery, 4)
        XCTAssertEqual(r.ema.useFor, .validation)
        for recipe in [r, TrainingRecipe()] {
            let text = recipe.tomlString()
            XCTAssertTrue(text.contains("[ema]"), text)
            XCTAssertEqual(try TrainingRecipe.parse(toml: text), recipe, text)
        }
        for use in TrainingRecipe.EMAUse.allCases {
            XCTAssertEqual(try TrainingRecipe.parse(toml: "[ema]\nuse_for = \"\(use.rawValue)\"").ema.useFor, use)
        }
        let model = r.ema.makeModel(parameters: [Tensor(shape: [1], values: [0])])
        XCTAssertEqual([model.decay, model.minDecay, model.invGamma, model.power], [0.99, 0.5, 2, 0.75])
        XCTAssertEqual(model.updateAfterStep, 10)
        XCTAssertTrue(model.useEMAWarmup)
    }

    func testBadValuesNameTheKey() {
        TinyTrainerRun.assertError("[ema]\ndecay = 1.5", key: "ema.decay", contains: ["in 0...1", "got 1.5"])
        TinyTrainerRun.assertError("[ema]\nmin_decay = -0.1", key: "ema.min_decay", contains: ["in 0...1"])
        TinyTrainerRun.assertError("[ema]\ndecay = 0.9\nmin_decay = 0.95", key: "ema.min_decay", contains: ["exceeds ema.decay = 0.9", "lower min_decay"])
        TinyTrainerRun.assertError("[ema]\nupdate_every = 0", key: "ema.update_every", contains: [">= 1", "got 0"])
        TinyTrainerRun.assertError("[ema]\nupdate_after_step = -1", key: "ema.update_after_step", contains: [">= 0"])
        TinyTrainerRun.assertError("[ema]\ninv_gamma = 0", key: "ema.inv_gamma", contains: ["> 0"])
        TinyTrainerRun.assertError("[ema]\npower = -1", key: "ema.power", contains: ["> 0"])
        TinyTrainerRun.assertError("[ema]\nuse_for = \"final\"", key: "ema.use_for",
                                   contains: ["\"both\"", "\"export\"", "\"validation\"", "\"none\"", "\"final\""])
        TinyTrainerRun.assertError("[ema]\nbeta = 0.9", key: "ema.beta", contains: ["decay"])
    }

    /// The EMA file after 6 steps (an update every 2nd, warm-up decay, the first update
    /// skipped) equals `EMAModel` fed the raw weights of the checkpoints of steps 2, 4, 6,
    /// from the weights the run started with; with `use_for = "none"` the LoRA files are
    /// the raw weights and no raw file is written.
    func testTheEMAIsEMAModelOverTheTrainedWeightsTrajectory() throws {
        var recipe = TinyTrainerRun.recipe(steps: 6)
        recipe.ema.enabled = true
        recipe.ema.decay = 0.9
        recipe.ema.updateAfterStep = 1
        recipe.ema.useEMAWarmup = true
        recipe.ema.power = 0.75
        recipe.ema.updateEvery = 2
        recipe.ema.useFor = .none
        let dir = TinyTrainerRun.directory(self)
        let trainer = try TinyTrainerRun.trainer(recipe)
        try trainer.train(directory: dir)

        let replay = try TinyTrainerRun.trainer(recipe)
        let networks = try XCTUnwrap(replay.weights as? LoRAWeights).networks
        let expected = recipe.ema.makeModel(parameters: replay.weights.parameters)
        for step in [2, 4, 6] {
            try LoRAFile.load(dir.appendingPathComponent("lora-\(CheckpointName(step: step).tag).safetensors").path, into: networks)
            expected.update(replay.weights.parameters)
        }
        XCTAssertEqual(expected.optimizationStep, 3)
        let saved = try TinyTrainerRun.tensors("shadow", in: dir.appendingPathComponent("ema-step000006.safetensors"))
        XCTAssertEqual(saved, TinyTrainerRun.values(expected.shadow))
        XCTAssertEqual(TinyTrainerRun.values(try XCTUnwrap(trainer.ema).shadow), saved)
        XCTAssertNotEqual(saved, TinyTrainerRun.values(replay.weights.parameters), "the average lags the trained weights")
        XCTAssertEqual(TinyTrainerRun.values(trainer.weights.parameters), TinyTrainerRun.values(replay.weights.parameters),
                       "use_for = none: the LoRA file is the trained weights")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("raw-step000006.safetensors").path))
        let state = try JSONDecoder().decode(TrainingCheckpointState.self,
                                             from: Data(contentsOf: dir.appendingPathComponent("state-step000006.json")))
        XCTAssertEqual(state.emaFile, "ema-step000006.safetensors")
        XCTAssertNil(state.rawWeightsFile)
    }

    /// `use_for = "export"`: the LoRA file holds the EMA, the raw file the weights training
    /// goes on from (the trainer's own, unchanged by the export), and both belong to the
    /// checkpoint for `keep_last`.
    func testTheExportedLoRAIsTheEMAWhenAsked() throws {
        var recipe = TinyTrainerRun.recipe(steps: 3)
        recipe.ema.enabled = true
        recipe.ema.decay = 0.8
        recipe.ema.useFor = .export
        recipe.checkpoint.keepLast = 1
        let dir = TinyTrainerRun.directory(self)
        let trainer = try TinyTrainerRun.trainer(recipe)
        let files = try trainer.train(directory: dir)
        XCTAssertEqual(files.rawWeightsFile, "raw-step000003.safetensors")

        let reader = try TinyTrainerRun.trainer(recipe)
        try LoRAFile.load(dir.appendingPathComponent("lora-step000003.safetensors").path,
                          into: try XCTUnwrap(reader.weights as? LoRAWeights).networks)
        let exported = TinyTrainerRun.values(reader.weights.parameters)
        XCTAssertEqual(exported, try TinyTrainerRun.tensors("shadow", in: dir.appendingPathComponent("ema-step000003.safetensors")))
        let raw = try TinyTrainerRun.tensors("param", in: dir.appendingPathComponent("raw-step000003.safetensors"))
        XCTAssertEqual(raw, TinyTrainerRun.values(trainer.weights.parameters))
        XCTAssertNotEqual(raw, exported)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), [
            "ema-step000003.safetensors", "lora-step000003.safetensors", "optimizer-step000003.safetensors",
            "raw-step000003.safetensors", "state-step000003.json",
        ], "keep_last = 1 removed every file of steps 1 and 2")
    }

    /// Stopped after step 3 and resumed, an EMA run ends with the same bytes as a run
    /// never stopped: exported (EMA) LoRA, raw weights, EMA state and optimizer state.
    func testKillAndResumeWithEMAEqualsAnUninterruptedRun() throws {
        var recipe = TinyTrainerRun.recipe(steps: 6)
        recipe.checkpoint.every = 4
        recipe.ema.enabled = true
        recipe.ema.decay = 0.8
        recipe.ema.updateEvery = 2
        recipe.ema.useFor = .both
        let a = TinyTrainerRun.directory(self), b = TinyTrainerRun.directory(self)
        try TinyTrainerRun.trainer(recipe).train(directory: a)
        var steps = 0
        XCTAssertThrowsError(try TinyTrainerRun.trainer(recipe).train(directory: b, progress: { _ in steps += 1 }, shouldStop: { steps == 3 })) {
            XCTAssertTrue($0 is TrainingInterrupted, "\($0)")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: b.appendingPathComponent("ema-step000003.safetensors").path))
        try TinyTrainerRun.trainer(recipe).train(directory: b, resumeFrom: b.appendingPathComponent("state-step000003.json"))
        for name in ["lora-step000006.safetensors", "raw-step000006.safetensors", "ema-step000006.safetensors",
                     "optimizer-step000006.safetensors", "ema-step000004.safetensors", "lora-step000004.safetensors"] {
            XCTAssertEqual(try Data(contentsOf: a.appendingPathComponent(name)), try Data(contentsOf: b.appendingPathComponent(name)), name)
        }
    }

    /// `use_for = "validation"`: the validation image is drawn with the EMA weights (the
    /// same image the sampler draws after the EMA is copied in), not the trained ones, and
    /// training's own weights are put back.
    func testValidationImagesUseTheEMAWhenAsked() throws {
        var recipe = TinyTrainerRun.recipe(steps: 2)
        recipe.validation.prompts = ["a photo of {token} {class}"]
        recipe.validation.steps = 2
        recipe.ema.enabled = true
        recipe.ema.decay = 0.5
        recipe.ema.useFor = .validation
        let trainer = try TinyTrainerRun.trainer(recipe, validation: ValidationTexts(prompts: ["a photo of sks toy"]))
        var images: [ValidationImage] = []
        let dir = TinyTrainerRun.directory(self)
        try trainer.train(directory: dir, validationImage: { images.append($0) })
        XCTAssertEqual(images.map(\.step), [2])

        let validator = try XCTUnwrap(trainer.validator)
        let weights = trainer.weights
        weights.training = false
        let trained = TinyTrainerRun.values(weights.parameters)
        var raw: [Float] = [], averaged: [Float] = []
        try validator.draw(unet: trainer.unet, step: 2) { raw = $0.pixels }
        try XCTUnwrap(trainer.ema).copy(to: weights.parameters)
        try validator.draw(unet: trainer.unet, step: 2) { averaged = $0.pixels }
        XCTAssertEqual(images[0].pixels, averaged)
        XCTAssertNotEqual(images[0].pixels, raw)
        // The LoRA file (use_for = validation: not the EMA) holds what training ended with.
        let reader = try TinyTrainerRun.trainer(recipe)
        try LoRAFile.load(dir.appendingPathComponent("lora-step000002.safetensors").path,
                          into: try XCTUnwrap(reader.weights as? LoRAWeights).networks)
        XCTAssertEqual(TinyTrainerRun.values(reader.weights.parameters), trained)
    }

    /// Without `[ema]` a run writes the files it wrote before the section existed, and its
    /// resume state names no EMA or raw file.
    func testARunWithoutEMAWritesNoEMAFiles() throws {
        let dir = TinyTrainerRun.directory(self)
        let trainer = try TinyTrainerRun.trainer(TinyTrainerRun.recipe(steps: 1))
        try trainer.train(directory: dir)
        XCTAssertNil(trainer.ema)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(),
                       ["lora-step000001.safetensors", "optimizer-step000001.safetensors", "state-step000001.json"])
        let json = try String(contentsOf: dir.appendingPathComponent("state-step000001.json"), encoding: .utf8)
        XCTAssertFalse(json.contains("emaFile") || json.contains("rawWeightsFile"), json)
    }
}
