import Foundation
import XCTest
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining

/// The distillation loop on the tiny teacher of `distill_loss.safetensors` and a
/// KOALA-700M-structured student initialised from it, in process.
final class DistillationTrainerTests: XCTestCase {
    /// Captioned "images" as the trainer caches them: random latents and conditioning.
    static func examples(_ n: Int) -> [DistillationExample] {
        var g = RandomGenerator(seed: 19)
        return (0..<n).map { _ in
            DistillationExample(latents: Tensor.randn([1, 4, 8, 8], generator: &g),
                                hiddenStates: Tensor.randn([1, 3, 6], generator: &g),
                                pooled: Tensor.randn([1, 6], generator: &g),
                                timeIds: Tensor(shape: [1, 6], values: [64, 64, 0, 0, 64, 64]))
        }
    }

    static let recipeText = """
        [data]
        resolution = 64
        [optim]
        optimizer = "adamw"
        learning_rate = 3e-3
        weight_decay = 0
        [train]
        max_steps = 40
        rng = "native"
        seed = 3
        [checkpoint]
        every = 20
        [distill]
        features = "self-attention"
        mapping = "sa-bottom"
        """

    func trainer(_ recipe: DistillationRecipe) throws -> DistillationTrainer {
        let teacher = try DistillLossFixture.model("teacher")
        let studentConfig = try DistillLossFixture.config("koala-700m")
        let student = try StudentInitialization.student(studentConfig, from: teacher)
        return try DistillationTrainer(recipe: recipe, student: student, studentConfigJSON: try JSONEncoder().encode(studentConfig),
                                       teacher: teacher, noiseSchedule: NoiseSchedule(config: SchedulerConfig()),
                                       predictionType: .epsilon, examples: Self.examples(6))
    }

    func testTheStudentsPredictionApproachesTheTeachers() throws {
        for mode in DistillationFeatureMode.allCases {
            var recipe = try DistillationRecipe.parse(toml: Self.recipeText)
            recipe.distill.features = mode
            let t = try trainer(recipe)
            let teacherBefore = t.teacher.namedParameters().map { $0.1.toArray() }
            let before = t.relativeOutputMSE()
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            var firstFeature: Double?, lastFeature = 0.0
            let state = try t.train(directory: dir, progress: { p in
                if firstFeature == nil { firstFeature = p.feature }
                lastFeature = p.feature
            })
            let after = t.relativeOutputMSE()
            print("distill \(mode.rawValue): relative output MSE \(before) -> \(after); feature term \(firstFeature ?? 0) -> \(lastFeature)")
            XCTAssertLessThan(after, before * 0.85, "\(mode): the student did not approach the teacher")
            XCTAssertEqual(state.step, 40)
            XCTAssertEqual(state.unetFolder, "unet-step000040")
            for step in [20, 40] {
                let weightsFile = dir.appendingPathComponent(String(format: "unet-step%06d", step))
                    .appendingPathComponent(FullUNetWeights.weightsFile)
                XCTAssertTrue(FileManager.default.fileExists(atPath: weightsFile.path), weightsFile.path)
            }
            XCTAssertEqual(t.teacher.namedParameters().map { $0.1.toArray() }, teacherBefore, "the teacher changed")
        }
    }

    /// A run stopped after step 20 and resumed ends with the weights of one that ran
    /// straight through.
    func testAResumedRunEqualsAnUninterruptedOne() throws {
        var recipe = try DistillationRecipe.parse(toml: Self.recipeText)
        recipe.training.train.maxSteps = 30
        recipe.training.checkpoint.every = 0
        let fm = FileManager.default
        let a = fm.temporaryDirectory.appendingPathComponent("distill-a-\(UUID().uuidString)")
        let b = fm.temporaryDirectory.appendingPathComponent("distill-b-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: a); try? fm.removeItem(at: b) }
        let straight = try trainer(recipe)
        try straight.train(directory: a)
        var steps = 0
        XCTAssertThrowsError(try trainer(recipe).train(directory: b, progress: { _ in steps += 1 }, shouldStop: { steps == 12 }))
        let resumed = try trainer(recipe)
        try resumed.train(directory: b, resumeFrom: b.appendingPathComponent("state-step000012.json"))
        for ((key, p), (_, q)) in zip(straight.student.namedParameters(), resumed.student.namedParameters()) {
            XCTAssertEqual(p.toArray(), q.toArray(), key)
        }
    }
}

final class DistillationRecipeTests: XCTestCase {
    func testDefaultsAndKeys() throws {
        let d = try DistillationRecipe.parse(toml: "")
        XCTAssertEqual(d.distill.features, .selfAttention)
        XCTAssertEqual(d.distill.mapping, .saBottom)
        XCTAssertEqual(d.distill.weights, DistillationLossWeights(task: 1, output: 1, feature: 1))
        XCTAssertEqual(d.training.model.train, .full)
        let r = try DistillationRecipe.parse(toml: """
            [model]
            gradient_checkpointing = true
            [optim]
            learning_rate = 1e-5
            [distill]
            features = "last-feature"
            mapping = "sa-up"
            task_weight = 0.5
            output_weight = 2
            feature_weight = 0
            """)
        XCTAssertEqual(r.distill.features, .lastFeature)
        XCTAssertEqual(r.distill.mapping, .saUp)
        XCTAssertEqual(r.distill.weights, DistillationLossWeights(task: 0.5, output: 2, feature: 0))
        XCTAssertTrue(r.training.model.gradientCheckpointing)
        XCTAssertEqual(r.training.optim.learningRate, 1e-5)
    }

    func testMistakesNameTheKey() {
        func error(_ text: String) -> String {
            do { _ = try DistillationRecipe.parse(toml: text); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(error("[distill]\nfeature = \"self-attention\"").contains("unknown key 'distill.feature'"))
        XCTAssertTrue(error("[distill]\nmapping = \"sa-top\"").contains("distill.mapping must be one of \"sa-bottom\", \"sa-interleave\", \"sa-up\""))
        XCTAssertTrue(error("[distill]\ntask_weight = -1").contains("distill.task_weight must be in 0...1000"))
        XCTAssertTrue(error("[distill]\ntask_weight = 0\noutput_weight = 0\nfeature_weight = 0").contains("all three loss weights are 0"))
        XCTAssertTrue(error("[model]\ntrain = \"lora\"").contains("model.train: distillation trains the whole student"))
        XCTAssertTrue(error("[prior]\nenabled = false").contains("prior: distillation has no class images"))
        XCTAssertTrue(error("[data]\ninstance_prompt = \"x\"").contains("unknown key 'data.instance_prompt'"))
        XCTAssertTrue(error("[validation]\nprompts = [\"a {token} dog\"]").contains("validation.prompts: distillation has no subject to fill {token} or {class} in \"a {token} dog\""))
        XCTAssertTrue(error("[validation]\nprompts = [\"a\"]\nnegative_prompt = \"{class}\"").contains("validation.negative_prompt: distillation has no subject"))
        XCTAssertEqual(error("[validation]\nprompts = [\"a red cube\"]\nevery = 2"), "no error")
        XCTAssertTrue(error("[optim]\nlearning_rate = 0").contains("optim.learning_rate must be > 0"), error("[optim]\nlearning_rate = 0"))
    }
}
