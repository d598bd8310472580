import Foundation
import KoalaStore
import KoalaTensor
import XCTest

/// `koalabooth train` with `model.train = "full"` and with `model.lora.text_encoders`, on
/// the tiny model through the executable: the loss falls, checkpoints are diffusers
/// `unet` folders recorded as `.full`, `generate --subject` draws with them, the shipped
/// paper recipe runs, and killed runs resume to the same result.
final class FullTrainTests: TrainingTestCase {
    var fullRecipe: String {
        get throws {
            try recipe([("train = \"lora\"", "train = \"full\""), ("gradient_checkpointing = false", "gradient_checkpointing = true"),
                                     ("every = 10", "every = 3")])
        }
    }

    static func evalLosses(_ stdout: String) -> [Double] {
        stdout.split(separator: "\n").filter { $0.hasPrefix("eval loss ") }.compactMap { Double($0.split(separator: " ")[2]) }
    }

    func testFullRunLowersTheLossAndGenerateDrawsWithTheUNet() throws {
        let r = try CLI.run(["train", "robo", "--recipe", try fullRecipe, "--model", model, "--max-steps", "6", "--learning-rate", "1e-3",
                             "--seed", "1"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertEqual(TrainTests.losses(r.stdout).count, 6, r.stdout)
        let eval = Self.evalLosses(r.stdout)
        XCTAssertEqual(eval.count, 2, r.stdout)
        XCTAssertLessThan(eval[1], eval[0] * 0.97, "the loss should fall: \(r.stdout)")

        let store = try SubjectStore(home: home)
        let subject = try XCTUnwrap(store.subject(named: "robo"))
        let run = try XCTUnwrap(store.runs(subjectID: subject.id!).first)
        XCTAssertEqual(run.status, .finished)
        let checkpoints = try store.checkpoints(runID: run.id!)
        XCTAssertEqual(checkpoints.map(\.step), [3, 6])
        XCTAssertEqual(Set(checkpoints.map(\.kind)), [.full])
        let last = try XCTUnwrap(checkpoints.last)
        XCTAssertTrue(last.path.hasSuffix("unet-step000006/diffusion_pytorch_model.safetensors"), last.path)

        // A diffusers unet folder: the base config unchanged, every base tensor, trained values.
        let folder = store.url(forRelativePath: last.path).deletingLastPathComponent()
        let baseUNet = URL(fileURLWithPath: model).appendingPathComponent("unet")
        XCTAssertEqual(try Data(contentsOf: folder.appendingPathComponent("config.json")),
                       try Data(contentsOf: baseUNet.appendingPathComponent("config.json")))
        let trained = try SafeTensorsFile(path: folder.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let base = try SafeTensorsFile(path: baseUNet.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        XCTAssertEqual(Set(trained.names), Set(base.names))
        var changed = 0
        for name in base.names where try trained.tensor(name).toArray() != base.tensor(name).toArray() { changed += 1 }
        XCTAssertGreaterThan(changed, base.names.count / 2, "most U-Net tensors should have been trained")
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: folder.deletingLastPathComponent().path).contains { $0.contains("partial") })

        // generate --subject draws exactly what the base model with that unet folder swapped in draws.
        let swapped = dir.appendingPathComponent("swapped")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: model), to: swapped)
        let swappedWeights = swapped.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        try FileManager.default.removeItem(at: swappedWeights)
        try FileManager.default.copyItem(at: folder.appendingPathComponent("diffusion_pytorch_model.safetensors"), to: swappedWeights)
        func latents(_ args: [String], _ name: String) throws -> [Float] {
            let out = dir.appendingPathComponent("\(name).safetensors").path
            let g = try CLI.run(["generate", "--steps", "2", "--width", "64", "--height", "64", "--seed", "3",
                                 "--output", dir.appendingPathComponent("\(name).png").path, "--save-latents", out] + args, environment: env)
            XCTAssertEqual(g.status, 0, g.stderr)
            return try SafeTensorsFile(path: out).tensor("latents").toArray()
        }
        let viaSubject = try latents(["--subject", "robo", "--prompt", "a photo of {token} {class}"], "subject")
        XCTAssertEqual(viaSubject, try latents(["--model", swapped.path, "--prompt", "a photo of sks toy"], "swapped"))
        XCTAssertNotEqual(viaSubject, try latents(["--model", model, "--prompt", "a photo of sks toy"], "base"))
    }

    func testKilledFullRunResumesToTheSameResult() throws {
        // Checkpoints at steps 3 and 4 (every = 3, and the end): killed after 3, one step resumed.
        let base = ["--recipe", try fullRecipe, "--model", model, "--learning-rate", "1e-3", "--seed", "1", "--max-steps", "4"]
        let check = try checkKilledRunResumes(base, killAfter: 3, sameFiles: ["unet-step000004/diffusion_pytorch_model.safetensors",
                                                                             "unet-step000004/config.json", "optimizer-step000004.safetensors"])
        XCTAssertEqual(try check.store.checkpoints(runID: check.resumedRunID).last?.kind, .full)
    }

    /// The shipped paper recipe end to end (8-bit Adam, batch 4 x accumulation 2,
    /// gradient checkpointing, full U-Net), shrunk to the tiny model's size and 2 steps.
    func testPaperRecipeRunsOnTheTinyModel() throws {
        let paper = Self.root.appendingPathComponent("recipes/koala-700m-paper.toml").path
        let r = try CLI.run(["train", "robo", "--recipe", paper, "--model", model, "--resolution", "64", "--max-steps", "2"], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
        XCTAssertEqual(TrainTests.losses(r.stdout).count, 2, r.stdout)
        XCTAssertTrue(r.stdout.contains("full U-Net"), r.stdout)
        let store = try SubjectStore(home: home)
        let run = try XCTUnwrap(store.runs().first)
        XCTAssertEqual(run.status, .finished)
        let c = try XCTUnwrap(store.checkpoints(runID: run.id!).last)
        XCTAssertEqual(c.step, 2)
        XCTAssertEqual(c.kind, .full)
        let runDir = store.runDirectory(subjectID: run.subjectId, runID: run.id!)
        let optimizer = try SafeTensorsFile(path: runDir.appendingPathComponent("optimizer-step000002.safetensors").path)
        XCTAssertEqual(optimizer.metadata["optimizer"], "adam8bit")
        XCTAssertTrue(optimizer.metadata.contains { $0.key.hasSuffix(".quantized") && $0.value == "true" }, "8-bit states expected")
    }

    func testTextEncoderLoRARunSavesAndResumesTheEncoderAdapters() throws {
        let te = try recipe([("targets = [\"attention\"]", "targets = [\"attention\"]\ntext_encoders = true"),
                                        ("every = 10", "every = 2"), ("format = \"diffusers\"", "format = \"both\"")])
        let base = ["--recipe", te, "--model", model, "--learning-rate", "1e-2", "--seed", "1", "--max-steps", "8"]
        // Killed after its step-2 checkpoint, resumed: the same adapters as the uninterrupted run.
        let check = try checkKilledRunResumes(base, killAfter: 2, sameFiles: ["lora-step000008.safetensors", "lora-step000008.kohya.safetensors"])
        XCTAssertTrue(check.uninterrupted.contains("text encoders"), check.uninterrupted)
        let aDir = check.uninterruptedDirectory

        let file = try SafeTensorsFile(path: aDir.appendingPathComponent("lora-step000008.safetensors").path)
        for component in ["unet", "text_encoder", "text_encoder_2"] {
            let ups = file.names.filter { $0.hasPrefix(component + ".") && $0.hasSuffix(".lora_B.weight") }
            XCTAssertFalse(ups.isEmpty, "no \(component) adapters in \(file.names)")
            // lora_B starts at zero: nonzero values mean the adapters were trained.
            XCTAssertTrue(try ups.contains { try $0.hasPrefix(component + ".") && file.tensor($0).toArray().contains { $0 != 0 } }, component)
        }
        XCTAssertTrue(file.names.contains("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"), "\(file.names.sorted())")
        XCTAssertTrue(file.names.contains("text_encoder_2.text_model.encoder.layers.1.self_attn.out_proj.lora_B.weight"))
        let kohya = try SafeTensorsFile(path: aDir.appendingPathComponent("lora-step000008.kohya.safetensors").path)
        XCTAssertTrue(kohya.names.contains("lora_te1_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight"), "\(kohya.names.sorted())")
        XCTAssertTrue(kohya.names.contains("lora_te2_text_model_encoder_layers_1_self_attn_v_proj.alpha"))

    }
}
