import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaTensor
import KoalaTestSupport
import XCTest

/// `generate` at KOALA-Lightning's settings (Euler, `--timestep-spacing trailing`, 10 steps,
/// guidance 3.5) against diffusers at the same settings (Tests/Fixtures/lightning.safetensors,
/// tools/reference/fixtures_lightning.py), on the tiny model whose folder says `leading`.
final class LightningGenerateTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try CLI.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    static let cases: [(name: String, prompt: String, negative: String?, seed: Int)] = [
        ("trailing_noneg_seed42", "a photo of a koala wearing sunglasses", nil, 42),
        ("trailing_neg_seed3", "a koala astronaut", "blurry, low quality", 3),
    ]

    func generate(_ c: (name: String, prompt: String, negative: String?, seed: Int), spacing: String?, output: String,
                  latents: String? = nil) throws -> CLIResult {
        var args = ["generate", "--model", CLI.tinyModel, "--prompt", c.prompt, "--scheduler", "euler", "--steps", "10",
                    "--guidance", "3.5", "--seed", "\(c.seed)", "--width", "64", "--height", "64", "--output", output]
        if let spacing { args += ["--timestep-spacing", spacing] }
        if let negative = c.negative { args += ["--negative-prompt", negative] }
        if let latents { args += ["--save-latents", latents] }
        return try CLI.run(args)
    }

    func testTrailingEulerTenStepsMatchesDiffusers() throws {
        for c in Self.cases {
            let out = dir.appendingPathComponent("\(c.name).png").path
            let saved = dir.appendingPathComponent("\(c.name).safetensors").path
            let r = try generate(c, spacing: "trailing", output: out, latents: saved)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stderr.contains("step 10/10"), r.stderr)
            assertImageMatches(try RGBImage.load(path: out).pixels, try Fixtures.open("lightning").tensor("\(c.name).image").toArray()[...],
                               mean: 0.5, worst: 2, c.name)
            assertClose(try SafeTensorsFile(path: saved).tensor("latents"), try Fixtures.open("lightning").tensor("\(c.name).latents"),
                        atol: 2e-3, rtol: 2e-3)
            let text = PNGCodec.readTextOrEmpty(out)
            XCTAssertEqual(text["timestep_spacing"], "trailing")
            XCTAssertTrue(text["parameters"]?.contains("Steps: 10, Sampler: Euler, Schedule type: SGM Uniform, CFG scale: 3.5") == true,
                          text["parameters"] ?? "no parameters chunk")
        }
    }

    /// The folder's own spacing (leading) draws another image: the flag is what made it match.
    func testFolderSpacingDiffersFromTheLightningImage() throws {
        let c = Self.cases[0]
        let out = dir.appendingPathComponent("leading.png").path
        let r = try generate(c, spacing: nil, output: out)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertGreaterThan(imageDifference(try RGBImage.load(path: out).pixels,
                                             try Fixtures.open("lightning").tensor("\(c.name).image").toArray()[...]).mean, 2)
        XCTAssertEqual(PNGCodec.readTextOrEmpty(out)["timestep_spacing"], "leading")
    }

    func testSchedulerTimestepsAndSigmasMatchDiffusers() throws {
        var config = SchedulerConfig.sdxl
        config.timestepSpacing = .trailing
        var s = try EulerDiscreteScheduler(config: config)
        try s.setTimesteps(10)
        let f = try Fixtures.open("lightning")
        XCTAssertEqual(s.timesteps, try f.tensor("trailing_noneg_seed42.timesteps").toArray())
        assertClose(Tensor(shape: [11], values: s.sigmas), try f.tensor("trailing_noneg_seed42.sigmas"), atol: 1e-5, rtol: 1e-5)
    }

    func testUnknownSpacingIsRefused() throws {
        let r = try CLI.run(["generate", "--model", CLI.tinyModel, "--prompt", "p", "--timestep-spacing", "karras",
                             "--output", dir.appendingPathComponent("x.png").path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("unknown --timestep-spacing 'karras'"), r.stderr)
        XCTAssertTrue(r.stderr.contains("leading, trailing, linspace"), r.stderr)
    }
}
