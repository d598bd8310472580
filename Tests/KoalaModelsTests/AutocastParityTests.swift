import Foundation
import XCTest
import KoalaTensor
import KoalaTestSupport
@testable import KoalaModels

/// The bf16 precision mode against `torch.autocast("cpu", dtype=torch.bfloat16)`
/// (tools/reference/fixtures_autocast.py) on the tiny KOALA-layout U-Net of
/// unet.safetensors case "a", whose float32 output is the other reference.
///
/// Tolerance. bf16 keeps 8 significant bits: each rounded GEMM operand is off by up to
/// 2^-9 ≈ 0.2% (relative), ~0.1% typical. The two modes round the same weights and the
/// same first inputs identically; they differ where autocast also rounds each GEMM's
/// output to bf16 (KoalaBooth keeps float32) and in everything downstream of that, so
/// the relative L2 distance is of the order of one rounding per layer, compounded over
/// the ~10 GEMM layers on a path. Measured (torch 2.15, AMD EPYC AVX2): bf16 mode 1.05e-2,
/// float32 1.11e-2 — autocast's bf16 activations (every norm, activation and add after a
/// GEMM runs on bf16 values) dominate, and those are not mirrored (issue 14: float32
/// outputs). The test asks for < 1.5e-2 and that the bf16 mode is nearer autocast than
/// float32 (deterministic; equal distances if the rounding were skipped).
final class AutocastParityTests: XCTestCase {
    static func relativeL2(_ a: Tensor, _ b: Tensor) -> Double {
        let x = a.toArray(), y = b.toArray()
        precondition(x.count == y.count)
        var d = 0.0, n = 0.0
        for i in 0..<x.count { d += Double(x[i] - y[i]) * Double(x[i] - y[i]); n += Double(y[i]) * Double(y[i]) }
        return (d / n).squareRoot()
    }

    func testUNetForwardInBF16MatchesAutocast() throws {
        let f = try Fixtures.open("unet"), autocast = try Fixtures.open("autocast")
        let all = try XCTUnwrap(f.metadata["configs"])
        let configs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(all.utf8)) as? [String: Any])
        let config = try JSONDecoder().decode(UNet2DConditionConfig.self,
                                              from: try JSONSerialization.data(withJSONObject: try XCTUnwrap(configs["a"])))
        let model = UNet2DConditionModel(config: config, init: .uninitialized())
        let prefix = "a.weights."
        let keys = Set(f.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) })
        XCTAssertTrue(try model.load(keys: keys) { try f.tensor(prefix + $0) }.isExact)
        let freed = model.holdFrozenGEMMWeightsInBF16()
        XCTAssertGreaterThan(freed, model.parameterCount, "most of the tiny U-Net's parameters are GEMM weights")

        let out = try Precision.with(.bf16) {
            try noGrad {
                model(sample: try f.tensor("a.sample"), timestep: try f.tensor("a.timestep").toArray(),
                      encoderHiddenStates: try f.tensor("a.encoder_hidden_states"),
                      textEmbeds: try f.tensor("a.text_embeds"), timeIds: try f.tensor("a.time_ids"))
            }
        }
        let reference = try autocast.tensor("unet.out"), fp32 = try f.tensor("a.out")
        let bf16Distance = Self.relativeL2(out, reference), fp32Distance = Self.relativeL2(fp32, reference)
        print(String(format: "U-Net forward, relative L2 to autocast: bf16 mode %.2e, fp32 %.2e", bf16Distance, fp32Distance))
        XCTAssertLessThan(bf16Distance, 1.5e-2)
        XCTAssertLessThan(bf16Distance, fp32Distance, "bf16 mode is no nearer autocast than float32")
    }
}
