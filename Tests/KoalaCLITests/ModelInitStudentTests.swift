import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `model init --student … --from-teacher …`: the written U-Net folder holds the
/// reference initialisation (`fixtures_distill.py`), `model info` reads it, and a
/// pipeline with it as its U-Net generates.
final class ModelInitStudentTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func fixtureConfig(_ name: String) throws -> Data {
        let all = try XCTUnwrap(try Fixtures.open("distill").metadata["configs"])
        let configs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(all.utf8)) as? [String: Any])
        var config = try XCTUnwrap(configs[name] as? [String: Any])
        config["_class_name"] = "UNet2DConditionModel"
        return try JSONSerialization.data(withJSONObject: config)
    }

    /// The fixture's teacher as a diffusers U-Net folder.
    private func writeTeacher() throws -> String {
        let f = try Fixtures.open("distill")
        let teacher = dir.appendingPathComponent("teacher")
        try FileManager.default.createDirectory(at: teacher, withIntermediateDirectories: false)
        try fixtureConfig("teacher").write(to: teacher.appendingPathComponent("config.json"))
        var tensors: [String: Tensor] = [:]
        for k in f.names where k.hasPrefix("teacher.") { tensors[String(k.dropFirst("teacher.".count))] = try f.tensor(k) }
        try SafeTensors.write(tensors, to: teacher.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        return teacher.path
    }

    func testStudentFolderEqualsTheReferenceAndLoads() throws {
        let teacher = try writeTeacher(), f = try Fixtures.open("distill")
        for name in ["koala-700m", "koala-1b"] {
            let config = dir.appendingPathComponent("\(name).json")
            try fixtureConfig(name).write(to: config)
            let out = dir.appendingPathComponent("student-\(name)").path
            let r = try CLI.run(["model", "init", "--student", config.path, "--from-teacher", teacher, "--out", out])
            XCTAssertEqual(r.status, 0, r.stderr)
            let written = try SafeTensorsFile(path: out + "/diffusion_pytorch_model.safetensors")
            let expected = f.names.filter { $0.hasPrefix(name + ".") }
            XCTAssertEqual(written.names.count, expected.count)
            for k in expected {
                XCTAssertEqual(try written.tensor(String(k.dropFirst(name.count + 1))).toArray(), try f.tensor(k).toArray(), k)
            }
            let decoded = try JSONDecoder().decode(UNet2DConditionConfig.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/config.json")))
            XCTAssertEqual(decoded, try JSONDecoder().decode(UNet2DConditionConfig.self, from: fixtureConfig(name)))
            let info = try CLI.run(["model", "info", out, "--json"])
            XCTAssertEqual(info.status, 0, info.stderr)
            XCTAssertTrue(info.stdout.contains("\"parameters\" : \(expected.reduce(0) { $0 + f.entries[$1]!.shape.reduce(1, *) })"), info.stdout)
        }
    }

    /// A teacher pipeline (the tiny preset's encoders and VAE, an SDXL-structured U-Net:
    /// 2 resnets per down block, stacks [1, 2, 3], a mid block) → the tiny preset's
    /// KOALA-700M-structured student → a pipeline that `generate` draws with.
    func testStudentOfATeacherPipelineGenerates() throws {
        let teacher = dir.appendingPathComponent("teacher")
        try FileManager.default.copyItem(atPath: CLI.tinyModel, toPath: teacher.path)
        var teacherConfig = try PipelinePreset.named("tiny").unet
        teacherConfig.layersPerBlock = .one(2)
        teacherConfig.transformerLayersPerBlock = .many([.one(1), .one(2), .one(3)])
        teacherConfig.midBlockType = "UNetMidBlock2DCrossAttn"
        let unet = teacher.appendingPathComponent("unet")
        try JSONEncoder().encode(teacherConfig).write(to: unet.appendingPathComponent("config.json"))
        try SafeTensors.write(Dictionary(uniqueKeysWithValues: UNet2DConditionModel(config: teacherConfig, init: ParameterInitializer(seed: 9)).namedParameters()),
                              to: unet.appendingPathComponent("diffusion_pytorch_model.safetensors").path)

        let studentConfig = dir.appendingPathComponent("student.json")
        try JSONEncoder().encode(try PipelinePreset.named("tiny").unet).write(to: studentConfig)
        let student = dir.appendingPathComponent("student").path
        let r = try CLI.run(["model", "init", "--student", studentConfig.path, "--from-teacher", teacher.path, "--out", student])
        XCTAssertEqual(r.status, 0, r.stderr)
        let info = try CLI.run(["model", "info", student])
        XCTAssertTrue(info.stdout.contains("1,707,364"), info.stdout)

        let koala = dir.appendingPathComponent("koala")
        try FileManager.default.copyItem(at: teacher, to: koala)
        try FileManager.default.removeItem(at: koala.appendingPathComponent("unet"))
        try FileManager.default.copyItem(atPath: student, toPath: koala.appendingPathComponent("unet").path)
        let image = dir.appendingPathComponent("x.png").path
        let g = try CLI.run(["generate", "--model", koala.path, "--prompt", "a koala", "--steps", "1", "--width", "64", "--height", "64", "--output", image])
        XCTAssertEqual(g.status, 0, g.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: image))
        // The pipeline's U-Net is the teacher's, where the two share a block location.
        let p = try StableDiffusionXLPipeline.load(from: koala.path)
        let t = try SafeTensorsFile(path: unet.appendingPathComponent("diffusion_pytorch_model.safetensors").path)
        let s = Dictionary(uniqueKeysWithValues: p.unet.namedParameters())
        XCTAssertEqual(s["up_blocks.0.resnets.1.conv1.weight"]!.toArray(), try t.tensor("up_blocks.0.resnets.2.conv1.weight").toArray())
        XCTAssertEqual(s["down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_q.weight"]!.toArray(),
                       try t.tensor("down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_q.weight").toArray())
    }

    func testBadStudentsAndTeachersFailClearlyAndLeaveNothing() throws {
        let teacher = try writeTeacher()
        let out = dir.appendingPathComponent("s").path
        func run(_ args: [String]) throws -> CLIResult { try CLI.run(["model", "init"] + args + ["--out", out]) }

        // A full-size preset against the tiny teacher: widths differ.
        let preset = try run(["--student", "koala-700m", "--from-teacher", teacher])
        XCTAssertNotEqual(preset.status, 0)
        XCTAssertTrue(preset.stderr.contains("the student config's"), preset.stderr)
        XCTAssertTrue(preset.stderr.contains("SDXL-structured"), preset.stderr)

        // A student deeper than the teacher names the missing key.
        var deep = try JSONSerialization.jsonObject(with: fixtureConfig("koala-1b")) as! [String: Any]
        deep["transformer_layers_per_block"] = [1, 2, 4]
        let deepURL = dir.appendingPathComponent("deep.json")
        try JSONSerialization.data(withJSONObject: deep).write(to: deepURL)
        let d = try run(["--student", deepURL.path, "--from-teacher", teacher])
        XCTAssertNotEqual(d.status, 0)
        XCTAssertTrue(d.stderr.contains("transformer_blocks.3"), d.stderr)

        // A teacher folder that is not a U-Net.
        let notUNet = try run(["--student", "koala-1b", "--from-teacher", dir.path])
        XCTAssertTrue(notUNet.stderr.contains("neither a diffusers pipeline folder"), notUNet.stderr)
        let missing = try run(["--student", "koala-1b", "--from-teacher", dir.appendingPathComponent("nope").path])
        XCTAssertTrue(missing.stderr.contains("does not exist"), missing.stderr)

        // Option combinations.
        XCTAssertTrue(try run(["--student", "koala-1b"]).stderr.contains("--student needs --from-teacher"))
        XCTAssertTrue(try run(["--student", "koala-1b", "--preset", "tiny"]).stderr.contains("exclude each other"))
        XCTAssertTrue(try run(["--preset", "tiny", "--from-teacher", teacher]).stderr.contains("--from-teacher goes with --student"))
        XCTAssertTrue(try run(["--student", "koala-1b", "--from-teacher", teacher, "--seed", "1"]).stderr.contains("--seed goes with --preset"))
        XCTAssertTrue(try run(["--student", "huge", "--from-teacher", teacher]).stderr.contains("unknown student 'huge'"))
        XCTAssertTrue(try run([]).stderr.contains("give --preset NAME"))

        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }, [])
    }
}
