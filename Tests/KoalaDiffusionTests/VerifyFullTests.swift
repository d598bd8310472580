import Foundation
import KoalaModels
import KoalaTensor
import XCTest
@testable import KoalaDiffusion

/// The full-size KOALA-700M U-Net against diffusers (`just verify-full`): skipped unless
/// KB_VERIFY_FULL_DIR points at the folder tools/reference/verify_full.py wrote.
final class VerifyFullTests: XCTestCase {
    func testKoala700MUNetForwardMatchesDiffusers() throws {
        guard let dir = ProcessInfo.processInfo.environment["KB_VERIFY_FULL_DIR"] else {
            throw XCTSkip("set KB_VERIFY_FULL_DIR (just verify-full) to run the full-size check")
        }
        let unet = try StableDiffusionXLPipeline.loadUNet(PipelineFolder(path: dir))
        XCTAssertEqual(unet.config, .koala700M.with { $0.sampleSize = unet.config.sampleSize })
        XCTAssertEqual(unet.parameterCount, 782_822_724)
        let io = try SafeTensorsFile(path: dir + "/io.safetensors")
        let out = noGrad {
            unet(sample: try! io.tensor("sample"), timestep: try! io.tensor("timestep").toArray(),
                 encoderHiddenStates: try! io.tensor("encoder_hidden_states"),
                 textEmbeds: try! io.tensor("text_embeds"), timeIds: try! io.tensor("time_ids"))
        }
        let expected = try io.tensor("out").toArray(), got = out.toArray()
        var maxAbs: Float = 0, scale: Float = 0
        for (a, e) in zip(got, expected) { maxAbs = max(maxAbs, abs(a - e)); scale = max(scale, abs(e)) }
        print("verify-full: KOALA-700M U-Net at 256x256: max |swift - diffusers| = \(maxAbs), max |diffusers| = \(scale), relative \(maxAbs / scale)")
        XCTAssertLessThan(maxAbs / scale, 1e-4)
    }
}

extension UNet2DConditionConfig {
    func with(_ change: (inout Self) -> Void) -> Self { var c = self; change(&c); return c }
}
