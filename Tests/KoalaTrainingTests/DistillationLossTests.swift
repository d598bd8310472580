import Foundation
import XCTest
import KoalaModels
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining

/// `Tests/Fixtures/distill_loss.safetensors` (tools/reference/fixtures_distill_loss.py).
enum DistillLossFixture {
    /// An entry of the metadata "reference" (JSON): "configs", "weights" or "pairs".
    static func reference(_ key: String) throws -> Any {
        let text = try XCTUnwrap(try Fixtures.open("distill_loss").metadata["reference"])
        let all = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        return try XCTUnwrap(all[key], key)
    }

    static func config(_ name: String) throws -> UNet2DConditionConfig {
        let configs = try XCTUnwrap(try reference("configs") as? [String: Any])
        return try JSONDecoder().decode(UNet2DConditionConfig.self,
                                        from: try JSONSerialization.data(withJSONObject: try XCTUnwrap(configs[name])))
    }

    /// A model whose parameters are the fixture's flat tensor `name`, split in
    /// `namedParameters()` order.
    static func model(_ name: String) throws -> UNet2DConditionModel {
        let m = UNet2DConditionModel(config: try config(name), init: .uninitialized())
        let flat = try Fixtures.open("distill_loss").tensor(name).toArray()
        XCTAssertEqual(m.parameterCount, flat.count, "\(name): parameter count")
        var at = 0
        noGrad {
            for (_, p) in m.namedParameters() {
                p.assign(Tensor(shape: p.shape, values: Array(flat[at..<at + p.count])))
                at += p.count
            }
        }
        return m
    }

    struct Inputs {
        let sample, encoderHiddenStates, textEmbeds, timeIds, target: Tensor
        let timestep: [Float]
    }

    static func inputs() throws -> Inputs {
        let f = try Fixtures.open("distill_loss")
        return Inputs(sample: try f.tensor("sample"), encoderHiddenStates: try f.tensor("encoder_hidden_states"),
                      textEmbeds: try f.tensor("text_embeds"), timeIds: try f.tensor("time_ids"),
                      target: try f.tensor("target"), timestep: try f.tensor("timestep").toArray())
    }

    static func weights() throws -> DistillationLossWeights {
        let w = try XCTUnwrap(try reference("weights") as? [String: Double])
        return DistillationLossWeights(task: Float(w["task"]!), output: Float(w["output"]!), feature: Float(w["feature"]!))
    }
}

/// KOALA's distillation loss against `tools/reference/fixtures_distill_loss.py`: one step
/// of a tiny SDXL-structured teacher (2 resnets per down block, stacks [1, 2, 4], mid
/// block) and students with KOALA-700M's ([1, 1, 2], no mid block) and KOALA-1B's
/// ([1, 2, 3], mid block) structure, the reference's features taken by forward hooks on
/// diffusers' modules. The matched pairs, the three loss terms and every student
/// gradient must equal the reference, for both feature modes and all three mappings.
final class DistillationLossTests: XCTestCase {
    static let cases: [(DistillationFeatureMode, DistillationLayerMapping)] = [
        (.selfAttention, .saBottom), (.selfAttention, .saInterleave), (.selfAttention, .saUp), (.lastFeature, .saBottom),
    ]

    func step(_ loss: DistillationLoss, student: UNet2DConditionModel, teacher: UNet2DConditionModel,
              _ x: DistillLossFixture.Inputs) -> DistillationLossTerms {
        loss(student: student, teacher: teacher, sample: x.sample, timestep: x.timestep,
             encoderHiddenStates: x.encoderHiddenStates, textEmbeds: x.textEmbeds, timeIds: x.timeIds, target: x.target)
    }

    /// Every student gradient against the reference's `<id>.grads` (all of them flattened
    /// and concatenated in namedParameters() order).
    func assertGradients(of student: UNet2DConditionModel, equal f: SafeTensorsFile, _ id: String, _ label: String,
                         file: StaticString = #filePath, line: UInt = #line) throws {
        let grads = try f.tensor("\(id).grads").toArray()
        var at = 0
        for (key, p) in student.namedParameters() {
            let expected = Tensor(shape: p.shape, values: Array(grads[at..<at + p.count]))
            at += p.count
            guard let g = p.grad else { XCTFail("\(id): no gradient for \(key)", file: file, line: line); continue }
            assertClose(g, expected, atol: 2e-5, rtol: 1e-3, "\(label) \(key)", file: file, line: line)
        }
        XCTAssertEqual(at, grads.count, id, file: file, line: line)
    }

    func testLossTermsAndStudentGradientsEqualTheReference() throws {
        let f = try Fixtures.open("distill_loss")
        let expectedPairs = try XCTUnwrap(try DistillLossFixture.reference("pairs") as? [String: [[String]]])
        let teacher = try DistillLossFixture.model("teacher"), x = try DistillLossFixture.inputs(), w = try DistillLossFixture.weights()
        for name in ["koala-700m", "koala-1b"] {
            for (mode, mapping) in Self.cases {
                let id = "\(name)/\(mode.rawValue)/\(mapping.rawValue)"
                let student = try DistillLossFixture.model(name)
                student.setRequiresGrad(true)
                let loss = try DistillationLoss(student: student, teacher: teacher, mode: mode, mapping: mapping, weights: w)
                XCTAssertEqual(loss.pairs.map { [$0.student, $0.teacher] }, try XCTUnwrap(expectedPairs[id]), id)
                let terms = step(loss, student: student, teacher: teacher, x)
                for (term, value) in [("task", terms.task), ("output", terms.output), ("feature", terms.feature),
                                      ("total", terms.total)] {
                    assertClose(value, try f.tensor("\(id).\(term)"), atol: 1e-6, rtol: 1e-5, "\(id) \(term)")
                }
                terms.total.backward()
                try assertGradients(of: student, equal: f, id, "\(id) grad")
                for (key, p) in teacher.namedParameters() where p.grad != nil { XCTFail("\(id): the teacher's \(key) got a gradient") }
            }
        }
    }

    /// Gradient checkpointing keeps the recorded self-attentions out of its checkpoints
    /// (their graph is needed); the gradients stay the reference's.
    func testGradientCheckpointingGivesTheSameGradients() throws {
        let f = try Fixtures.open("distill_loss")
        let teacher = try DistillLossFixture.model("teacher"), x = try DistillLossFixture.inputs()
        teacher.gradientCheckpointing = true
        let student = try DistillLossFixture.model("koala-700m")
        student.setRequiresGrad(true)
        student.gradientCheckpointing = true
        let id = "koala-700m/self-attention/sa-interleave"
        let loss = try DistillationLoss(student: student, teacher: teacher, mode: .selfAttention, mapping: .saInterleave,
                                        weights: try DistillLossFixture.weights())
        let terms = step(loss, student: student, teacher: teacher, x)
        assertClose(terms.total, try f.tensor("\(id).total"), atol: 1e-6, rtol: 1e-5, "total")
        terms.total.backward()
        try assertGradients(of: student, equal: f, id, "checkpointed grad")
    }

    /// Recording changes nothing in the output, keeps only what was asked for, and
    /// names what the model does not have.
    func testTheRecorderKeepsOnlyTheNamedFeaturesAndChangesNothing() throws {
        let teacher = try DistillLossFixture.model("teacher"), x = try DistillLossFixture.inputs()
        func forward(_ r: UNetFeatureRecorder?) -> Tensor {
            noGrad { teacher(sample: x.sample, timestep: x.timestep, encoderHiddenStates: x.encoderHiddenStates,
                             textEmbeds: x.textEmbeds, timeIds: x.timeIds, recorder: r) }
        }
        let names: Set = ["down_blocks.0", "down_blocks.2.attentions.1.transformer_blocks.3.attn1", "mid_block",
                          "up_blocks.2", "up_blocks.0.attentions.2.transformer_blocks.0.attn1", "down_blocks.7"]
        let recorder = UNetFeatureRecorder(recording: names)
        XCTAssertEqual(forward(recorder).toArray(), forward(nil).toArray())
        XCTAssertEqual(Set(recorder.features.keys), names.subtracting(["down_blocks.7"]))
        XCTAssertEqual(recorder.missing, ["down_blocks.7"])
        XCTAssertEqual(recorder.features["down_blocks.0"]?.shape, [2, 2, 4, 4], "after the downsampler")
        XCTAssertEqual(recorder.features["down_blocks.2.attentions.1.transformer_blocks.3.attn1"]?.shape, [2, 4, 6])
        XCTAssertEqual(recorder.features["up_blocks.2"]?.shape, [2, 2, 8, 8])
    }

    func testTheMappingsPickTheDocumentedTeacherBlocks() {
        func blocks(_ m: DistillationLayerMapping, _ s: Int, _ t: Int) -> [Int] {
            (0..<s).map { m.teacherBlock($0, studentDepth: s, teacherDepth: t) }
        }
        // SDXL's DW-3 (10 blocks) under KOALA-700M's 5 and KOALA-1B's 6.
        XCTAssertEqual(blocks(.saBottom, 5, 10), [0, 1, 2, 3, 4])
        XCTAssertEqual(blocks(.saInterleave, 5, 10), [0, 2, 4, 6, 8])
        XCTAssertEqual(blocks(.saUp, 5, 10), [5, 6, 7, 8, 9])
        XCTAssertEqual(blocks(.saInterleave, 6, 10), [0, 1, 3, 5, 6, 8])
        XCTAssertEqual(blocks(.saUp, 6, 10), [4, 5, 6, 7, 8, 9])
        for m in DistillationLayerMapping.allCases { XCTAssertEqual(blocks(m, 2, 2), [0, 1], "\(m): equal depths") }
    }

    func testAStudentTheTeacherCannotMatchIsRefusedNamingTheBlock() throws {
        let teacher = try DistillLossFixture.model("teacher")
        var deep = try DistillLossFixture.config("koala-1b")
        deep.transformerLayersPerBlock = .many([.one(1), .one(2), .one(5)])
        let student = UNet2DConditionModel(config: deep, init: .uninitialized())
        XCTAssertThrowsError(try DistillationLoss(student: student, teacher: teacher, mode: .selfAttention)) { error in
            XCTAssertTrue("\(error)".contains("down_blocks.2.attentions.0 has 5 transformer blocks, the teacher's down_blocks.2.attentions.0 only 4"), "\(error)")
        }
        let noMid = UNet2DConditionModel(config: try DistillLossFixture.config("koala-700m"), init: .uninitialized())
        XCTAssertThrowsError(try DistillationLoss(student: student, teacher: noMid, mode: .lastFeature)) { error in
            XCTAssertTrue("\(error)".contains("the student has a mid block and the teacher none"), "\(error)")
        }
    }
}
