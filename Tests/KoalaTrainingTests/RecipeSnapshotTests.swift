import Foundation
import XCTest
import KoalaDiffusion
@testable import KoalaTraining

/// The recipe text a run records (`tomlString()`): it reads back to the same recipe, and
/// so does the text of runs recorded before it was written by TOMLKit's encoder.
final class RecipeSnapshotTests: XCTestCase {
    /// A valid recipe with every key away from its default, optional keys set, and prompts
    /// with quotes, a backslash, a tab and a non-ASCII letter.
    static func everyKeySet() -> TrainingRecipe {
        var r = TrainingRecipe()
        r.data.resolution = 768
        r.data.centerCrop = false
        r.data.randomFlip = true
        r.data.aspectBuckets = false
        r.data.instancePrompt = "a \"photo\" of {token} {class}, caf\u{e9} \\ style"
        r.data.latents = .mean
        r.prior.enabled = true
        r.prior.classPrompt = "a photo of {class}\tin a field"
        r.prior.numClassImages = 200
        r.prior.priorLossWeight = 0.5
        r.prior.generationSteps = 30
        r.prior.generationGuidance = 6.5
        r.model.train = .lora
        r.model.gradientCheckpointing = true
        r.model.precision = .bf16
        r.model.lora.rank = 16
        r.model.lora.alpha = 8
        r.model.lora.dropout = 0.1
        r.model.lora.targets = [.attention, .feedForward, .resnetConvs]
        r.model.lora.textEncoders = true
        r.optim.optimizer = .adamw8bit
        r.optim.learningRate = 5e-5
        r.optim.betas = [0.85, 0.995]
        r.optim.eps = 1e-7
        r.optim.weightDecay = 0.02
        r.optim.maxGradNorm = 0
        r.optim.lrScheduler = .cosine
        r.optim.warmupSteps = 50
        r.train.batchSize = 2
        r.train.gradientAccumulation = 4
        r.train.maxSteps = 1200
        r.train.seed = 123456789
        r.train.rng = .torch
        r.train.predictionType = .vPrediction
        r.train.minSNRGamma = 5
        r.train.noiseOffset = 0.05
        r.train.logEvery = 10
        r.train.lossSmoothing = 0.95
        r.checkpoint.every = 250
        r.checkpoint.keepLast = 3
        r.checkpoint.format = .both
        r.validation.prompts = ["{token} {class} on the moon", "a painting of {token} {class}"]
        r.validation.negativePrompt = "blurry, low quality"
        r.validation.every = 100
        r.validation.steps = 30
        r.validation.scheduler = .euler
        r.validation.karras = true
        r.validation.timestepSpacing = .trailing
        r.validation.guidance = 5.5
        r.validation.seed = 7
        r.validation.imagesPerPrompt = 2
        return r
    }

    /// `everyKeySet().tomlString()` as the hand-written writer before TOMLKit's encoder put it
    /// (generated with that code, not retyped).
    static let oldWriterText = #"""
        [data]
        resolution = 768
        center_crop = false
        random_flip = true
        aspect_buckets = false
        instance_prompt = "a \"photo\" of {token} {class}, café \\ style"
        latents = "mean"

        [prior]
        enabled = true
        class_prompt = "a photo of {class}\tin a field"
        num_class_images = 200
        prior_loss_weight = 0.5
        generation_steps = 30
        generation_guidance = 6.5

        [model]
        train = "lora"
        gradient_checkpointing = true
        precision = "bf16"

        [model.lora]
        rank = 16
        alpha = 8.0
        dropout = 0.1
        targets = ["attention", "feed_forward", "resnet_convs"]
        text_encoders = true

        [optim]
        optimizer = "adamw8bit"
        learning_rate = 5e-05
        betas = [0.85, 0.995]
        eps = 1e-07
        weight_decay = 0.02
        max_grad_norm = 0.0
        lr_scheduler = "cosine"
        warmup_steps = 50

        [train]
        batch_size = 2
        gradient_accumulation = 4
        max_steps = 1200
        seed = 123456789
        rng = "torch"
        prediction_type = "v_prediction"
        min_snr_gamma = 5.0
        noise_offset = 0.05
        log_every = 10
        loss_smoothing = 0.95

        [checkpoint]
        every = 250
        keep_last = 3
        format = "both"

        [validation]
        prompts = ["{token} {class} on the moon", "a painting of {token} {class}"]
        negative_prompt = "blurry, low quality"
        every = 100
        steps = 30
        scheduler = "euler"
        karras = true
        timestep_spacing = "trailing"
        guidance = 5.5
        seed = 7
        images_per_prompt = 2
        """#

    /// `TrainingRecipe().tomlString()` from the same writer.
    static let oldWriterDefaultText = #"""
        [data]
        resolution = 512
        center_crop = true
        random_flip = false
        aspect_buckets = true
        instance_prompt = "a photo of {token} {class}"
        latents = "sample"

        [prior]
        enabled = false
        class_prompt = "a photo of {class}"
        num_class_images = 100
        prior_loss_weight = 1.0
        generation_steps = 25
        generation_guidance = 5.0

        [model]
        train = "lora"
        gradient_checkpointing = false
        precision = "auto"

        [model.lora]
        rank = 4
        dropout = 0.0
        targets = ["attention"]
        text_encoders = false

        [optim]
        optimizer = "adamw"
        learning_rate = 0.0001
        betas = [0.9, 0.999]
        eps = 1e-08
        max_grad_norm = 1.0
        lr_scheduler = "constant"
        warmup_steps = 0

        [train]
        batch_size = 1
        gradient_accumulation = 1
        max_steps = 500
        seed = 0
        rng = "torch"
        noise_offset = 0.0
        log_every = 1
        loss_smoothing = 0.9

        [checkpoint]
        every = 100
        format = "diffusers"

        [validation]
        prompts = []
        every = 0
        steps = 25
        scheduler = "dpm-solver++"
        karras = false
        guidance = 7.5
        seed = 0
        images_per_prompt = 1
        """#

    func testRunsRecordedByTheOldWriterStillLoad() throws {
        XCTAssertEqual(try TrainingRecipe.parse(toml: Self.oldWriterText, source: "run 1 recipe"), Self.everyKeySet())
        XCTAssertEqual(try TrainingRecipe.parse(toml: Self.oldWriterDefaultText, source: "run 2 recipe"), TrainingRecipe())
    }

    func testSnapshotReadsBackToTheSameRecipe() throws {
        var recipes = [TrainingRecipe(), Self.everyKeySet()]
        var r = Self.everyKeySet()
        r.model.train = .full
        r.checkpoint.format = .diffusers
        r.model.lora.alpha = nil
        r.train.seed = TrainingRecipe.maxSeed
        r.validation.negativePrompt = "line one\nline \"two\" \u{1F428} {class}"
        r.optim.learningRate = 1.0 / 3.0
        recipes.append(r)
        for recipe in recipes {
            let text = recipe.tomlString()
            XCTAssertEqual(try TrainingRecipe.parse(toml: text), recipe, text)
        }
    }

    func testSnapshotWritesOptionalKeysOnlyWhenSet() throws {
        let optional = ["alpha", "weight_decay", "prediction_type", "min_snr_gamma", "keep_last", "negative_prompt",
                        "timestep_spacing"]
        let defaults = TrainingRecipe().tomlString()
        let set = Self.everyKeySet().tomlString()
        func keys(_ text: String) -> Set<String> {
            Set(text.split(separator: "\n").compactMap { line in
                line.firstIndex(of: "=").map { line[..<$0].trimmingCharacters(in: .whitespaces) }
            })
        }
        XCTAssertTrue(keys(defaults).isDisjoint(with: optional), defaults)
        XCTAssertTrue(keys(set).isSuperset(of: optional), set)
        // Every key of every section is written: 62 in all, 7 of them optional.
        XCTAssertEqual(set.split(separator: "\n").filter { $0.contains(" = ") }.count, 62, set)
        XCTAssertEqual(defaults.split(separator: "\n").filter { $0.contains(" = ") }.count, 55, defaults)
    }
}
