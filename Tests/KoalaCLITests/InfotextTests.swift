import Foundation
@testable import KoalaApp
@testable import KoalaCLI
import KoalaDiffusion
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// Reads a `parameters` text the way AUTOMATIC1111's `parse_generation_parameters`
/// (modules/infotext_utils.py) does: the last line is the field line when its field regex
/// finds at least 3 fields; lines before it are the prompt until one starts with
/// `Negative prompt:`; values in double quotes are JSON strings; a `WxH` value becomes
/// `Key-1` and `Key-2`.
enum A1111InfotextReader {
    // A1111's re_param: a key, a colon, then a quoted string or anything up to the next comma.
    static let field = try! NSRegularExpression(pattern: #"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#)
    static let size = try! NSRegularExpression(pattern: #"^(\d+)x(\d+)$"#)

    static func fields(_ line: String) -> [(String, String)] {
        let ns = line as NSString
        return field.matches(in: line, range: NSRange(location: 0, length: ns.length)).map {
            (ns.substring(with: $0.range(at: 1)), ns.substring(with: $0.range(at: 2)))
        }
    }

    static func parse(_ text: String) -> [String: String] {
        var lines = text.trimmingCharacters(in: .whitespacesAndNewlines).components(separatedBy: "\n")
        var last = lines.removeLast()
        if fields(last).count < 3 { lines.append(last); last = "" }
        var prompt = "", negative = "", doneWithPrompt = false
        for var line in lines {
            line = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("Negative prompt:") {
                doneWithPrompt = true
                line = String(line.dropFirst(16)).trimmingCharacters(in: .whitespaces)
            }
            if doneWithPrompt { negative += (negative.isEmpty ? "" : "\n") + line } else { prompt += (prompt.isEmpty ? "" : "\n") + line }
        }
        var res = ["Prompt": prompt, "Negative prompt": negative]
        for (k, var v) in fields(last) {
            if v.count >= 2, v.first == "\"", v.last == "\"",
               let s = try? JSONSerialization.jsonObject(with: Data(v.utf8), options: .fragmentsAllowed) as? String { v = s }
            let ns = v as NSString
            if let m = size.firstMatch(in: v, range: NSRange(location: 0, length: ns.length)) {
                res["\(k)-1"] = ns.substring(with: m.range(at: 1))
                res["\(k)-2"] = ns.substring(with: m.range(at: 2))
            } else {
                res[k] = v
            }
        }
        return res
    }
}

/// The A1111-style `parameters` chunk (`Infotext`), read back as A1111 reads it.
final class InfotextTests: XCTestCase {
    func parameters(_ prompt: String, negative: String? = nil, steps: Int = 25, guidance: Float = 7.5,
                    scheduler: SchedulerKind = .dpmSolverPlusPlus, karras: Bool = false, seed: UInt64 = 42) -> GenerationParameters {
        var p = GenerationParameters(prompt: prompt)
        p.negativePrompt = negative
        p.steps = steps
        p.guidance = guidance
        p.scheduler = scheduler
        p.karras = karras
        p.seed = seed
        return p
    }

    /// `fields` has each entry of `expected` (and may have others).
    func assertFields(_ fields: [String: String], include expected: [String: String],
                      file: StaticString = #filePath, line: UInt = #line) {
        for (key, value) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(fields[key], value, key, file: file, line: line)
        }
    }

    func testEveryFieldReadsBackAsA1111ParsesIt() {
        let p = parameters("a photo of sks dog, on the beach: sunny", negative: "blurry, low quality", karras: true)
        var info = Infotext(parameters: p, schedulerConfig: p.schedulerConfig(.sdxl), width: 1024, height: 768,
                            modelPath: "/models/koala-700m/")
        info.loras = [Infotext.LoRA(name: "sks-dog", scale: 0.8, hash: "0123456789ab")]
        let text = info.text
        let lines = text.components(separatedBy: "\n")
        XCTAssertEqual(lines.count, 3, text)
        XCTAssertEqual(lines[1], "Negative prompt: blurry, low quality")
        XCTAssertTrue(lines[2].hasPrefix("Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 1024x768, Model: koala-700m"), lines[2])

        // Every field, and no other (no "Guidance rescale" at its default).
        var r = A1111InfotextReader.parse(text)
        XCTAssertTrue(r.removeValue(forKey: "Version")?.hasPrefix("KoalaBooth ") == true, text)
        XCTAssertEqual(r, ["Prompt": "a photo of sks dog, on the beach: sunny <lora:sks-dog:0.8>",
                           "Negative prompt": "blurry, low quality", "Steps": "25", "Sampler": "DPM++ 2M", "Schedule type": "Karras",
                           "CFG scale": "7.5", "Seed": "42", "Size-1": "1024", "Size-2": "768", "Model": "koala-700m", "RNG": "CPU",
                           "Lora hashes": "sks-dog: 0123456789ab"])
    }

    func testNoNegativePromptLineWithoutOneAndMultiLinePromptsSurvive() {
        for negative in [nil, ""] as [String?] {
            let p = parameters("line one\nline two", negative: negative, steps: 10, guidance: 3.5, scheduler: .euler)
            var config = SchedulerConfig.sdxl
            config.timestepSpacing = .trailing
            let text = Infotext(parameters: p, schedulerConfig: p.schedulerConfig(config), width: 64, height: 64, modelPath: "tiny").text
            XCTAssertFalse(text.contains("Negative prompt"), text)
            assertFields(A1111InfotextReader.parse(text), include: ["Prompt": "line one\nline two", "Negative prompt": "",
                                                                    "Sampler": "Euler", "Schedule type": "SGM Uniform",
                                                                    "CFG scale": "3.5", "Steps": "10"])
        }
    }

    func testSamplerAndScheduleNamesFollowA1111() {
        var config = SchedulerConfig.sdxl
        XCTAssertEqual(Infotext.samplerName(.dpmSolverPlusPlus, config), "DPM++ 2M")
        XCTAssertEqual(Infotext.samplerName(.euler, config), "Euler")
        XCTAssertEqual(Infotext.samplerName(.ddim, config), "DDIM")
        config.solverOrder = 3
        XCTAssertEqual(Infotext.samplerName(.dpmSolverPlusPlus, config), "DPM++ 3M")
        for (spacing, name) in [(TimestepSpacing.leading, "DDIM"), (.trailing, "SGM Uniform"), (.linspace, "Uniform")] {
            config.timestepSpacing = spacing
            config.useKarrasSigmas = false
            XCTAssertEqual(Infotext.scheduleType(config), name)
            config.useKarrasSigmas = true
            XCTAssertEqual(Infotext.scheduleType(config), "Karras")
        }
        // --timestep-spacing overrides the folder's spacing, and the name follows it.
        var p = parameters("x")
        p.timestepSpacing = .trailing
        XCTAssertEqual(Infotext.scheduleType(p.schedulerConfig(.sdxl)), "SGM Uniform")
    }

    func testValuesWithCommasColonsQuotesAndLineBreaksAreQuotedAndReadBack() {
        XCTAssertEqual(Infotext.quote("plain value"), "plain value")
        XCTAssertEqual(Infotext.quote("a, b"), "\"a, b\"")
        let tricky = "my \"best\", model: v2\nnew\\line é"
        let p = parameters("x")
        var info = Infotext(parameters: p, schedulerConfig: .sdxl, width: 64, height: 64, modelPath: "/m/\(tricky)")
        info.seeded = false
        let text = info.text
        XCTAssertEqual(text.components(separatedBy: "\n").count, 2, "quoting keeps the field line one line: \(text)")
        let r = A1111InfotextReader.parse(text)
        XCTAssertEqual(r["Model"], tricky)
        XCTAssertEqual(r["Sampler"], "DPM++ 2M")
        XCTAssertNil(r["Seed"], "no seed reproduces given latents")
        XCTAssertNil(r["RNG"])
    }

    func testGuidanceRescaleAndWholeNumbersAsA1111WritesThem() {
        var p = parameters("x", guidance: 7)
        p.guidanceRescale = 0.7
        var info = Infotext(parameters: p, schedulerConfig: .sdxl, width: 64, height: 64, modelPath: "m")
        info.loras = [Infotext.LoRA(name: "a:b,c", scale: 1, hash: nil)]
        let r = A1111InfotextReader.parse(info.text)
        XCTAssertEqual(r["CFG scale"], "7.0", "Python writes a float cfg_scale as 7.0")
        XCTAssertEqual(r["Guidance rescale"], "0.7")
        XCTAssertEqual(r["Prompt"], "x <lora:abc:1>")
        XCTAssertNil(r["Lora hashes"], "no hash, no entry")
    }

    /// A1111 hashes a safetensors LoRA by the bytes after its header (kohya's addnet hash),
    /// so editing the metadata does not change it; a stored `sshs_model_hash` wins.
    func testLoRAHashIsTheAddnetHashOfTheTensorData() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("dog.safetensors").path, b = dir.appendingPathComponent("dog2.safetensors").path
        let t = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        try SafeTensors.write(["w": t], to: a)
        try SafeTensors.write(["w": t], to: b, metadata: ["note": "edited"])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: a))
        let headerLength = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let tail = dir.appendingPathComponent("tail.bin")
        try bytes.dropFirst(8 + headerLength).write(to: tail)
        let expected = String(try sha256sum(tail.path).prefix(12))

        let lora = Infotext.LoRA.file(a, scale: 0.5)
        XCTAssertEqual(lora.name, "dog")
        XCTAssertEqual(lora.hash, expected)
        XCTAssertEqual(Infotext.shortHash(ofLoRA: b), expected)
        XCTAssertNotEqual(try sha256sum(a), try sha256sum(b), "the files differ; only their tensor data agrees")

        let c = dir.appendingPathComponent("kohya.safetensors").path
        try SafeTensors.write(["w": t], to: c, metadata: ["sshs_model_hash": "ABCDEF0123456789" + String(repeating: "0", count: 48)])
        XCTAssertEqual(Infotext.shortHash(ofLoRA: c), "abcdef012345")
        XCTAssertNil(Infotext.shortHash(ofLoRA: dir.appendingPathComponent("missing.safetensors").path))
    }

    /// `sha256sum` (coreutils), so the expected hash does not come from KoalaBooth's SHA-256.
    func sha256sum(_ path: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["sha256sum", path]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        p.waitUntilExit()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return String(out.prefix(64))
    }

    /// `generate` writes the chunk beside its own keys, naming the LoRA it applied.
    func testGeneratePNGCarriesTheParametersChunk() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("k.png").path
        let lora = Fixtures.directory.appendingPathComponent("lora/kohya.safetensors").path
        let r = try CLI.run(["generate", "--model", CLI.tinyModel, "--prompt", "a koala, in a hat", "--negative-prompt", "blurry",
                             "--steps", "2", "--width", "64", "--height", "64", "--seed", "7", "--scheduler", "euler",
                             "--timestep-spacing", "trailing", "--guidance", "3.5", "--lora", lora, "--lora-scale", "0.5",
                             "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let text = PNGCodec.readTextOrEmpty(out)
        XCTAssertEqual(text["prompt"], "a koala, in a hat", "the existing keys stay")
        XCTAssertEqual(text["timestep_spacing"], "trailing")
        let info = try XCTUnwrap(text["parameters"])
        assertFields(A1111InfotextReader.parse(info), include: [
            "Prompt": "a koala, in a hat <lora:kohya:0.5>", "Negative prompt": "blurry", "Steps": "2", "Sampler": "Euler",
            "Schedule type": "SGM Uniform", "CFG scale": "3.5", "Seed": "7", "Size-1": "64", "Size-2": "64",
            "Model": URL(fileURLWithPath: CLI.tinyModel).lastPathComponent, "RNG": "CPU",
            "Lora hashes": "kohya: \(Infotext.shortHash(ofLoRA: lora)!)"])
    }
}
