import Foundation
import XCTest
import KoalaModels
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining

/// The KOALA student initialisation against `tools/reference/fixtures_distill.py`: a
/// tiny teacher with SDXL's structure (2 resnets per down block, stacks [1, 2, 3], mid
/// block) and students with KOALA-700M's (1 resnet, [1, 1, 2], no mid block) and
/// KOALA-1B's ([1, 2, 2], mid block), initialised in PyTorch by walking the modules.
/// Equality is exact: the initialisation only copies.
final class StudentInitializationTests: XCTestCase {
    static func config(_ name: String) throws -> UNet2DConditionConfig {
        let all = try XCTUnwrap(try Fixtures.open("distill").metadata["configs"])
        let configs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(all.utf8)) as? [String: Any])
        return try JSONDecoder().decode(UNet2DConditionConfig.self,
                                        from: try JSONSerialization.data(withJSONObject: try XCTUnwrap(configs[name])))
    }

    /// The teacher's weights by key.
    static func teacherWeights() throws -> (shapes: [String: [Int]], tensor: (String) throws -> Tensor) {
        let f = try Fixtures.open("distill")
        var shapes: [String: [Int]] = [:]
        for (k, e) in f.entries where k.hasPrefix("teacher.") { shapes[String(k.dropFirst("teacher.".count))] = e.shape }
        return (shapes, { try f.tensor("teacher." + $0) })
    }

    func testBothStudentsEqualTheReferenceInitialisationExactly() throws {
        let f = try Fixtures.open("distill")
        let teacher = try Self.teacherWeights(), teacherConfig = try Self.config("teacher")
        for name in ["koala-700m", "koala-1b"] {
            let student = try StudentInitialization.student(try Self.config(name), teacher: teacherConfig,
                                                            teacherShapes: teacher.shapes, teacherTensor: teacher.tensor)
            let params = student.namedParameters()
            let expected = f.names.filter { $0.hasPrefix(name + ".") }
            XCTAssertEqual(params.count, expected.count, name)
            for (key, p) in params {
                XCTAssertEqual(p.toArray(), try f.tensor("\(name).\(key)").toArray(), "\(name): \(key)")
            }
        }
    }

    func testTheUpBlockRuleTakesTheTeachersFirstAndLastPairs() throws {
        let teacher = try Self.teacherWeights()
        let student = UNet2DConditionModel(config: try Self.config("koala-700m"), init: .uninitialized())
        let map = try StudentInitialization.teacherKeys(for: student.namedParameters().map { ($0.0, $0.1.shape) },
                                                        teacherShapes: teacher.shapes)
        XCTAssertEqual(map["up_blocks.0.resnets.0.conv1.weight"], "up_blocks.0.resnets.0.conv1.weight")
        XCTAssertEqual(map["up_blocks.0.resnets.1.conv1.weight"], "up_blocks.0.resnets.2.conv1.weight")
        XCTAssertEqual(map["up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q.weight"],
                       "up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_q.weight")
        XCTAssertEqual(map["down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_q.weight"],
                       "down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_q.weight")
        XCTAssertEqual(Set(map.values).count, map.count, "two student keys from one teacher key")
    }

    func testAnInMemoryTeacherGivesTheSameStudent() throws {
        let teacherConfig = try Self.config("teacher"), teacher = try Self.teacherWeights()
        let model = UNet2DConditionModel(config: teacherConfig, init: .uninitialized())
        try model.load(keys: Set(teacher.shapes.keys), teacher.tensor)
        let student = try StudentInitialization.student(try Self.config("koala-1b"), from: model)
        let f = try Fixtures.open("distill")
        for (key, p) in student.namedParameters() { XCTAssertEqual(p.toArray(), try f.tensor("koala-1b.\(key)").toArray(), key) }
        // Copies, not views: training the student leaves the teacher alone.
        let (key, p) = student.namedParameters()[0]
        p.data[0] += 1
        XCTAssertNotEqual(p.toArray(), Dictionary(uniqueKeysWithValues: model.namedParameters())[key]!.toArray())
    }

    func testStudentsTheTeacherCannotSupplyFailNamingTheKey() throws {
        let teacher = try Self.teacherWeights(), teacherConfig = try Self.config("teacher")
        func failure(_ student: UNet2DConditionConfig, teacherConfig: UNet2DConditionConfig? = nil) -> String {
            do {
                _ = try StudentInitialization.student(student, teacher: teacherConfig ?? (try! Self.config("teacher")),
                                                      teacherShapes: teacher.shapes, teacherTensor: teacher.tensor)
                return "no error"
            } catch { return "\(error)" }
        }
        // A deeper stack than the teacher's.
        var deep = try Self.config("koala-1b")
        deep.transformerLayersPerBlock = .many([.one(1), .one(2), .one(4)])
        let d = failure(deep)
        XCTAssertTrue(d.contains("down_blocks.2.attentions.0.transformer_blocks.3"), d)
        XCTAssertTrue(d.contains("has 4 transformer_blocks, the teacher's only 3"), d)
        // More resnets than the teacher's.
        var wide = try Self.config("koala-700m")
        wide.layersPerBlock = .one(3)
        XCTAssertTrue(failure(wide).contains("the teacher's only"), failure(wide))
        // Another width: not the teacher's family.
        var other = try Self.config("koala-700m")
        other.blockOutChannels = [2, 4, 8]
        XCTAssertTrue(failure(other).contains("block_out_channels is [2,4,8], the teacher's [2,4,6]"), failure(other))
        // A mid block the teacher lacks.
        var noMid = teacherConfig
        noMid.midBlockType = nil
        XCTAssertTrue(failure(try Self.config("koala-1b"), teacherConfig: noMid).contains("the teacher cannot supply mid_block"))
    }
}
