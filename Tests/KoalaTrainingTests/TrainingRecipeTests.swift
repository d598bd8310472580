import Foundation
import XCTest
import KoalaDiffusion
@testable import KoalaTraining

final class TrainingRecipeTests: XCTestCase {
    /// The repository's recipes/ folder, found from this file's location.
    static let recipesDir = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("recipes")

    /// Parses `toml` expecting a RecipeError; returns it (fails the test otherwise).
    func error(_ toml: String, file: StaticString = #filePath, line: UInt = #line) -> RecipeError? {
        do {
            let r = try TrainingRecipe.parse(toml: toml)
            XCTFail("expected an error, parsed \(r)", file: file, line: line)
        } catch let e as RecipeError {
            return e
        } catch {
            XCTFail("expected a RecipeError, got \(error)", file: file, line: line)
        }
        return nil
    }

    func assertError(_ toml: String, key: String, contains fragments: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
        guard let e = error(toml, file: file, line: line) else { return }
        XCTAssertEqual(e.key, key, "\(e)", file: file, line: line)
        for f in fragments {
            XCTAssertTrue(e.description.contains(f), "'\(e)' lacks '\(f)'", file: file, line: line)
        }
    }

    // MARK: defaults and sections

    func testEmptyRecipeTakesDefaults() throws {
        let r = try TrainingRecipe.parse(toml: "")
        XCTAssertEqual(r, TrainingRecipe())
        XCTAssertEqual(r.data.resolution, 512)
        XCTAssertTrue(r.data.centerCrop)
        XCTAssertFalse(r.data.randomFlip)
        XCTAssertTrue(r.data.aspectBuckets)
        XCTAssertEqual(r.data.instancePrompt, "a photo of {token} {class}")
        XCTAssertEqual(r.data.latents, .sample)
        XCTAssertFalse(r.prior.enabled)
        XCTAssertEqual(r.prior.numClassImages, 100)
        XCTAssertEqual(r.prior.priorLossWeight, 1)
        XCTAssertEqual(r.model.train, .lora)
        XCTAssertFalse(r.model.gradientCheckpointing)
        XCTAssertEqual(r.model.lora.rank, 4)
        XCTAssertNil(r.model.lora.alpha)
        XCTAssertEqual(r.model.lora.effectiveAlpha, 4)
        XCTAssertEqual(r.model.lora.targets, [.attention])
        XCTAssertEqual(r.optim.optimizer, .adamw)
        XCTAssertEqual(r.optim.learningRate, 1e-4)
        XCTAssertEqual(r.optim.betas, [0.9, 0.999])
        XCTAssertEqual(r.optim.eps, 1e-8)
        XCTAssertNil(r.optim.weightDecay)
        XCTAssertEqual(r.optim.maxGradNorm, 1)
        XCTAssertEqual(r.optim.lrScheduler, .constant)
        XCTAssertEqual(r.optim.warmupSteps, 0)
        XCTAssertEqual(r.train.batchSize, 1)
        XCTAssertEqual(r.train.gradientAccumulation, 1)
        XCTAssertEqual(r.train.maxSteps, 500)
        XCTAssertEqual(r.train.seed, 0)
        XCTAssertEqual(r.train.rng, .torch)
        XCTAssertNil(r.train.predictionType)
        XCTAssertNil(r.train.minSNRGamma)
        XCTAssertEqual(r.train.noiseOffset, 0)
        XCTAssertEqual(r.checkpoint.every, 100)
        XCTAssertNil(r.checkpoint.keepLast)
        XCTAssertEqual(r.checkpoint.format, .diffusers)
        XCTAssertEqual(r.validation.prompts, [])
        XCTAssertEqual(r.validation.steps, 25)
        XCTAssertEqual(r.validation.scheduler, .dpmSolverPlusPlus)
        XCTAssertEqual(r.validation.guidance, 7.5)
        XCTAssertNil(r.validation.timestepSpacing, "unset: the model folder's spacing")
    }

    func testEverySectionParses() throws {
        let r = try TrainingRecipe.parse(toml: """
            [data]
            resolution = 768
            center_crop = false
            random_flip = true
            aspect_buckets = false
            instance_prompt = "{token} {class}, studio photo"
            latents = "mean"

            [prior]
            enabled = true
            class_prompt = "a {class}"
            num_class_images = 50
            prior_loss_weight = 0.5
            generation_steps = 30
            generation_guidance = 6

            [model]
            train = "lora"
            gradient_checkpointing = true

            [model.lora]
            rank = 16
            alpha = 8.5
            dropout = 0.1
            targets = ["attention", "feed_forward", "resnet_convs"]
            text_encoders = true

            [optim]
            optimizer = "adamw8bit"
            learning_rate = 2e-4
            betas = [0.8, 0.99]
            eps = 1e-6
            weight_decay = 0.02
            max_grad_norm = 0
            lr_scheduler = "cosine"
            warmup_steps = 20

            [train]
            batch_size = 2
            gradient_accumulation = 3
            max_steps = 100
            seed = 1234
            rng = "native"
            prediction_type = "v_prediction"
            min_snr_gamma = 5
            noise_offset = 0.05
            log_every = 10
            loss_smoothing = 0.5

            [checkpoint]
            every = 25
            keep_last = 4
            format = "kohya"

            [validation]
            prompts = ["{token} {class} in Paris", "a painting of {token} {class}"]
            negative_prompt = "blurry"
            every = 50
            steps = 30
            scheduler = "euler"
            karras = true
            timestep_spacing = "trailing"
            guidance = 5.5
            seed = 7
            images_per_prompt = 2
            """)
        XCTAssertEqual(r.data.resolution, 768)
        XCTAssertFalse(r.data.centerCrop)
        XCTAssertTrue(r.data.randomFlip)
        XCTAssertFalse(r.data.aspectBuckets)
        XCTAssertEqual(r.data.instancePrompt(token: "sks", className: "dog"), "sks dog, studio photo")
        XCTAssertEqual(r.data.latents, .mean)

        XCTAssertTrue(r.prior.enabled)
        XCTAssertEqual(r.prior.classPrompt(className: "dog"), "a dog")
        XCTAssertEqual(r.prior.numClassImages, 50)
        XCTAssertEqual(r.prior.priorLossWeight, 0.5)
        XCTAssertEqual(r.prior.generationSteps, 30)
        XCTAssertEqual(r.prior.generationGuidance, 6)

        XCTAssertEqual(r.model.train, .lora)
        XCTAssertTrue(r.model.gradientCheckpointing)
        XCTAssertEqual(r.model.lora.rank, 16)
        XCTAssertEqual(r.model.lora.effectiveAlpha, 8.5)
        XCTAssertEqual(r.model.lora.dropout, 0.1)
        XCTAssertEqual(r.model.lora.targets, [.attention, .feedForward, .resnetConvs])
        XCTAssertTrue(r.model.lora.textEncoders)

        XCTAssertEqual(r.optim.optimizer, .adamw8bit)
        XCTAssertEqual(r.optim.learningRate, 2e-4)
        XCTAssertEqual(r.optim.betas, [0.8, 0.99])
        XCTAssertEqual(r.optim.eps, 1e-6)
        XCTAssertEqual(r.optim.weightDecay, 0.02)
        XCTAssertEqual(r.optim.maxGradNorm, 0)
        XCTAssertEqual(r.optim.lrScheduler, .cosine)
        XCTAssertEqual(r.optim.warmupSteps, 20)
        let schedule = r.optim.schedule(totalSteps: r.train.maxSteps)
        XCTAssertEqual(schedule, LRSchedule(kind: .cosine, baseLearningRate: 2e-4, warmupSteps: 20, totalSteps: 100))
        XCTAssertEqual(r.optim.makeOptimizer().learningRate, 2e-4)

        XCTAssertEqual(r.train.batchSize, 2)
        XCTAssertEqual(r.train.gradientAccumulation, 3)
        XCTAssertEqual(r.train.effectiveBatchSize, 6)
        XCTAssertEqual(r.train.maxSteps, 100)
        XCTAssertEqual(r.train.seed, 1234)
        XCTAssertEqual(r.train.rng, .native)
        XCTAssertEqual(r.train.predictionType, .vPrediction)
        XCTAssertEqual(r.train.minSNRGamma, 5)
        XCTAssertEqual(r.train.noiseOffset, 0.05)
        XCTAssertEqual(r.train.logEvery, 10)
        XCTAssertEqual(r.train.lossSmoothing, 0.5)

        XCTAssertEqual(r.checkpoint.every, 25)
        XCTAssertEqual(r.checkpoint.keepLast, 4)
        XCTAssertEqual(r.checkpoint.format, .kohya)

        XCTAssertEqual(r.validation.prompts(token: "sks", className: "dog"), ["sks dog in Paris", "a painting of sks dog"])
        XCTAssertEqual(r.validation.negativePrompt, "blurry")
        XCTAssertEqual(r.validation.every, 50)
        XCTAssertEqual(r.validation.steps, 30)
        XCTAssertEqual(r.validation.scheduler, .euler)
        XCTAssertTrue(r.validation.karras)
        XCTAssertEqual(r.validation.timestepSpacing, .trailing)
        XCTAssertEqual(r.validation.guidance, 5.5)
        XCTAssertEqual(r.validation.seed, 7)
        XCTAssertEqual(r.validation.imagesPerPrompt, 2)

        // The snapshot form reads back to the same recipe, and so does JSON.
        XCTAssertEqual(try TrainingRecipe.parse(toml: r.tomlString()), r)
        let json = try JSONEncoder().encode(r)
        XCTAssertEqual(try JSONDecoder().decode(TrainingRecipe.self, from: json), r)
        XCTAssertTrue(String(decoding: json, as: UTF8.self).contains("\"learning_rate\""))
    }

    func testIntegerAcceptedForFloatKeysAndDottedKeys() throws {
        let r = try TrainingRecipe.parse(toml: "optim.learning_rate = 1\nmodel.lora.alpha = 2\n")
        XCTAssertEqual(r.optim.learningRate, 1)
        XCTAssertEqual(r.model.lora.alpha, 2)
    }

    func testAlphaFollowsRankOverride() throws {
        let r = try TrainingRecipe().applying(RecipeOverrides(rank: 12))
        XCTAssertEqual(r.model.lora.effectiveAlpha, 12)
    }

    // MARK: errors name their key

    func testUnknownTopLevelKey() {
        assertError("optm = 1", key: "optm", contains: ["unknown key 'optm'", "did you mean 'optim'?"])
        assertError("[trian]\nmax_steps = 3", key: "trian", contains: ["unknown key 'trian'", "did you mean 'train'?"])
    }

    func testUnknownKeyInSection() {
        assertError("[optim]\nlearnig_rate = 1e-4", key: "optim.learnig_rate",
                    contains: ["unknown key 'optim.learnig_rate'", "did you mean 'learning_rate'?", "max_grad_norm"])
        assertError("[model.lora]\nranks = 4", key: "model.lora.ranks", contains: ["did you mean 'rank'?"])
        assertError("[validation]\nbanana = true", key: "validation.banana", contains: ["unknown key 'validation.banana'"])
    }

    func testWrongTypes() {
        assertError("[train]\nmax_steps = 500.5", key: "train.max_steps",
                    contains: ["train.max_steps must be an integer, got floating-point number 500.5"])
        assertError("[optim]\nlearning_rate = \"fast\"", key: "optim.learning_rate",
                    contains: ["optim.learning_rate must be a number, got string \"fast\""])
        assertError("[data]\ncenter_crop = 1", key: "data.center_crop", contains: ["must be true or false, got integer 1"])
        assertError("optim = 3", key: "optim", contains: ["optim must be a table"])
        assertError("[model]\nlora = \"yes\"", key: "model.lora", contains: ["model.lora must be a table"])
        assertError("[validation]\nprompts = \"one\"", key: "validation.prompts", contains: ["an array of strings"])
        assertError("[validation]\nprompts = [\"a\", 2]", key: "validation.prompts[1]", contains: ["must be a string, got integer 2"])
        assertError("[optim]\nbetas = [0.9, \"x\"]", key: "optim.betas[1]", contains: ["must be a number"])
    }

    func testOutOfRange() {
        assertError("[optim]\nlearning_rate = -1", key: "optim.learning_rate",
                    contains: ["optim.learning_rate must be > 0 and <= 1, got -1"])
        assertError("[optim]\nlearning_rate = nan", key: "optim.learning_rate", contains: ["a finite number"])
        assertError("[data]\nresolution = 500", key: "data.resolution", contains: ["a multiple of 8", "got 500"])
        assertError("[data]\nresolution = 32", key: "data.resolution", contains: ["in 64...4096, got 32"])
        assertError("[train]\nbatch_size = 0", key: "train.batch_size", contains: ["got 0"])
        assertError("[train]\nseed = -3", key: "train.seed", contains: ["train.seed must be >= 0, got -3"])
        assertError("[model.lora]\nrank = 0", key: "model.lora.rank", contains: ["in 1...1024, got 0"])
        assertError("[model.lora]\ndropout = 1", key: "model.lora.dropout", contains: [">= 0 and < 1, got 1"])
        assertError("[model.lora]\ntargets = []", key: "model.lora.targets", contains: ["non-empty"])
        assertError("[optim]\nbetas = [0.9]", key: "optim.betas", contains: ["two numbers"])
        assertError("[optim]\nbetas = [0.9, 1.5]", key: "optim.betas[1]", contains: ["got 1.5"])
        assertError("[checkpoint]\nkeep_last = 0", key: "checkpoint.keep_last", contains: [">= 1, got 0"])
        assertError("[train]\nmin_snr_gamma = 0", key: "train.min_snr_gamma", contains: ["> 0, got 0"])
        assertError("[validation]\nsteps = 0", key: "validation.steps", contains: ["in 1...1000, got 0"])
        assertError("[data]\ninstance_prompt = \"a photo of a dog\"", key: "data.instance_prompt", contains: ["{token}"])
        assertError("[data]\ninstance_prompt = \"{token} {klass}\"", key: "data.instance_prompt", contains: ["{klass}"])
        assertError("[prior]\nclass_prompt = \"{token} {class}\"", key: "prior.class_prompt", contains: ["must not contain {token}"])
    }

    func testBadEnumValues() {
        assertError("[optim]\noptimizer = \"adam\"", key: "optim.optimizer",
                    contains: ["optim.optimizer must be one of \"adam8bit\", \"adamw8bit\", \"adamw\"; got \"adam\""])
        assertError("[model]\ntrain = \"partial\"", key: "model.train", contains: ["\"lora\", \"full\""])
        assertError("[optim]\nlr_scheduler = \"step\"", key: "optim.lr_scheduler", contains: ["constant_with_warmup"])
        assertError("[train]\nrng = \"numpy\"", key: "train.rng", contains: ["\"torch\", \"native\""])
        assertError("[train]\nprediction_type = \"sample\"", key: "train.prediction_type", contains: ["\"epsilon\", \"v_prediction\""])
        assertError("[validation]\nscheduler = \"dpm\"", key: "validation.scheduler", contains: ["\"dpm-solver++\""])
        assertError("[validation]\ntimestep_spacing = \"uniform\"", key: "validation.timestep_spacing",
                    contains: ["\"leading\"", "\"trailing\"", "\"linspace\""])
        assertError("[checkpoint]\nformat = \"ckpt\"", key: "checkpoint.format", contains: ["\"kohya\""])
        assertError("[model.lora]\ntargets = [\"attention\", \"mlp\"]", key: "model.lora.targets[1]", contains: ["\"feed_forward\""])
        assertError("[data]\nlatents = \"mode\"", key: "data.latents", contains: ["\"mean\", \"sample\""])
    }

    func testRulesAcrossKeys() {
        assertError("[optim]\nwarmup_steps = 10", key: "optim.warmup_steps", contains: ["constant_with_warmup"])
        assertError("[optim]\nlr_scheduler = \"linear\"\nwarmup_steps = 600", key: "optim.warmup_steps",
                    contains: ["train.max_steps = 500"])
        assertError("[model]\ntrain = \"full\"\n[checkpoint]\nformat = \"both\"", key: "checkpoint.format",
                    contains: ["diffusers unet/ folder"])
        assertError("[validation]\nprompts = [\"x {token}\"]\nscheduler = \"ddim\"\nkarras = true", key: "validation.karras",
                    contains: ["ddim"])
        assertError("[validation]\nevery = 10", key: "validation.every", contains: ["validation.prompts"])
    }

    // MARK: overrides

    func testOverridesApply() throws {
        let base = try TrainingRecipe.load(path: Self.recipesDir.appendingPathComponent("tiny.toml").path)
        let r = try base.applying(RecipeOverrides(resolution: 128, maxSteps: 7, learningRate: 3e-4, rank: 2, seed: 99))
        XCTAssertEqual(r.data.resolution, 128)
        XCTAssertEqual(r.train.maxSteps, 7)
        XCTAssertEqual(r.optim.learningRate, 3e-4)
        XCTAssertEqual(r.model.lora.rank, 2)
        XCTAssertEqual(r.train.seed, 99)
        var expected = base
        expected.data.resolution = 128
        expected.train.maxSteps = 7
        expected.optim.learningRate = 3e-4
        expected.model.lora.rank = 2
        expected.train.seed = 99
        XCTAssertEqual(r, expected)
        XCTAssertEqual(try base.applying(RecipeOverrides()), base)
    }

    func testOverridesAreValidated() throws {
        func overrideError(_ o: RecipeOverrides, on recipe: TrainingRecipe = TrainingRecipe()) -> RecipeError? {
            do { _ = try recipe.applying(o) } catch let e as RecipeError { return e } catch { XCTFail("\(error)") }
            XCTFail("expected an error for \(o)")
            return nil
        }
        // The library names the key an override broke; the CLI names the flag (ErrorWordingTests).
        let lr = overrideError(RecipeOverrides(learningRate: -1))
        XCTAssertEqual(lr?.key, "optim.learning_rate")
        XCTAssertEqual(lr?.description, "optim.learning_rate must be > 0 and <= 1, got -1 (an override of the recipe)")
        for (o, key) in [(RecipeOverrides(resolution: 100), "data.resolution"), (RecipeOverrides(maxSteps: 0), "train.max_steps"),
                         (RecipeOverrides(rank: 5000), "model.lora.rank"), (RecipeOverrides(seed: UInt64.max), "train.seed")] {
            guard case .override(key, let inner)? = overrideError(o) else { return XCTFail("\(o): not an override error of \(key)") }
            XCTAssertTrue(inner.description.hasPrefix(key), inner.description)
        }

        var full = TrainingRecipe()
        full.model.train = .full
        let rank = overrideError(RecipeOverrides(rank: 8), on: full)
        XCTAssertEqual(rank?.key, "model.lora.rank")
        XCTAssertTrue(rank?.description.contains("LoRA recipes") ?? false)

        // A flag that breaks another key's rule: the error names that key.
        var warm = TrainingRecipe()
        warm.optim.lrScheduler = .linear
        warm.optim.warmupSteps = 50
        XCTAssertEqual(overrideError(RecipeOverrides(maxSteps: 10), on: warm)?.key, "optim.warmup_steps")
    }

    // MARK: files

    func testMissingFile() {
        XCTAssertThrowsError(try TrainingRecipe.load(path: "/nonexistent/recipe.toml")) { e in
            XCTAssertEqual(e as? RecipeError, .fileNotFound(path: "/nonexistent/recipe.toml"))
            XCTAssertTrue("\(e)".contains("does not exist"))
        }
    }

    func testFileErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("recipe-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        let notToml = dir.appendingPathComponent("bad.toml")
        try "[optim]\nlearning_rate = 1e-4\n\nthis is not toml\n".write(to: notToml, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainingRecipe.load(path: notToml.path)) { e in
            guard case .syntax(let source, let line, let column, _)? = e as? RecipeError else {
                return XCTFail("expected a syntax error, got \(e)")
            }
            XCTAssertEqual(source, notToml.path)
            XCTAssertEqual(line, 4)
            XCTAssertGreaterThan(column, 0)
            XCTAssertTrue("\(e)".hasPrefix("\(notToml.path):4:"), "\(e)")
        }

        let binary = dir.appendingPathComponent("photo.toml")
        try Foundation.Data([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10]).write(to: binary)
        XCTAssertThrowsError(try TrainingRecipe.load(path: binary.path)) { e in
            guard case .unreadable? = e as? RecipeError else { return XCTFail("expected unreadable, got \(e)") }
        }

        XCTAssertThrowsError(try TrainingRecipe.load(path: dir.path)) { e in
            XCTAssertTrue("\(e)".contains("directory"), "\(e)")
        }

        let invalid = dir.appendingPathComponent("invalid.toml")
        try "[optim]\nlearning_rate = -1\n".write(to: invalid, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainingRecipe.load(path: invalid.path)) { e in
            XCTAssertEqual((e as? RecipeError)?.key, "optim.learning_rate")
            XCTAssertEqual("\(e)", "\(invalid.path): optim.learning_rate must be > 0 and <= 1, got -1")
        }
    }

    // MARK: shipped recipes

    func testEveryShippedRecipeIsValid() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.recipesDir.path)
            .filter { $0.hasSuffix(".toml") && !$0.hasSuffix("-distill.toml") }.sorted()
        for name in ["koala-700m-paper.toml", "koala-700m-lora-cpu.toml", "tiny.toml"] {
            XCTAssertTrue(files.contains(name), "recipes/\(name) is missing")
        }
        for name in files {
            let r = try TrainingRecipe.load(path: Self.recipesDir.appendingPathComponent(name).path)
            XCTAssertEqual(try TrainingRecipe.parse(toml: r.tomlString()), r, name)
        }
    }

    func testPaperRecipeMatchesThePaper() throws {
        let r = try TrainingRecipe.load(path: Self.recipesDir.appendingPathComponent("koala-700m-paper.toml").path)
        XCTAssertEqual(r.data.resolution, 1024)
        XCTAssertEqual(r.model.train, .full)
        XCTAssertEqual(r.optim.optimizer, .adam8bit)
        XCTAssertEqual(r.optim.learningRate, 5e-5)
        XCTAssertEqual(r.optim.lrScheduler, .constant)
        XCTAssertEqual(r.train.batchSize, 4)
        XCTAssertEqual(r.train.gradientAccumulation, 2)
        XCTAssertEqual(r.train.maxSteps, 500)
        XCTAssertFalse(r.prior.enabled)
        XCTAssertEqual(r.validation.scheduler, .dpmSolverPlusPlus)
        XCTAssertEqual(r.validation.steps, 25)
    }

    func testTinyRecipe() throws {
        let r = try TrainingRecipe.load(path: Self.recipesDir.appendingPathComponent("tiny.toml").path)
        XCTAssertEqual(r.data.resolution, 64)
        XCTAssertEqual(r.model.train, .lora)
        XCTAssertEqual(r.model.lora.rank, 4)
        XCTAssertEqual(r.checkpoint.every, 10)
        XCTAssertEqual(r.validation.prompts.count, 1)
        XCTAssertEqual(r.validation.steps, 4)
    }
}
