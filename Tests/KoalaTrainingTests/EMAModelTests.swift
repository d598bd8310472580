import Foundation
import KoalaTensor
import KoalaTestSupport
@testable import KoalaTraining
import XCTest

/// `EMAModel` against diffusers' `EMAModel` over 20 updates (fixtures_ema.py), and its
/// saved state resuming to the same trajectory.
final class EMAModelTests: XCTestCase {
    func parameters(_ f: SafeTensorsFile, _ name: String) throws -> [Tensor] {
        let params = try (0..<3).map { try f.tensor("\(name).init.\($0)") }
        params[0].requiresGrad = true
        params[1].requiresGrad = true
        return params
    }

    func set(_ params: [Tensor], _ f: SafeTensorsFile, _ name: String, step: Int) throws {
        for (i, p) in params.enumerated() {
            let value = try f.tensor("\(name).param.\(step).\(i)")
            withExtendedLifetime(value) { p.data.update(from: value.data, count: p.count) }
        }
    }

    func run(_ name: String, _ make: ([Tensor]) -> EMAModel, resumeAt: Int? = nil) throws {
        let f = try Fixtures.open("ema")
        let params = try parameters(f, name)
        var ema = make(params)
        for step in 1...20 {
            try set(params, f, name, step: step)
            ema.update(params)
            XCTAssertEqual(ema.decay(atStep: step), Double(try f.tensor("\(name).decay.\(step)").toArray()[0]),
                           accuracy: 1e-7, "\(name) decay at update \(step)")
            for i in 0..<3 {
                // Bit-for-bit: the same float32 operations in the same order.
                XCTAssertEqual(ema.shadow[i].toArray(), try f.tensor("\(name).shadow.\(step).\(i)").toArray(),
                               "\(name) shadow \(i) after update \(step)")
            }
            if step == resumeAt {
                let url = FileManager.default.temporaryDirectory.appendingPathComponent("ema-\(UUID().uuidString).safetensors")
                defer { try? FileManager.default.removeItem(at: url) }
                try ema.stateDict().save(to: url.path)
                ema = make(try parameters(f, name))
                try ema.load(stateDict: OptimizerState.load(from: url.path))
                XCTAssertEqual(ema.optimizationStep, step)
            }
        }
    }

    func testPlainScheduleMatchesDiffusers() throws {
        try run("plain") { EMAModel(parameters: $0, decay: 0.9, minDecay: 0.2, updateAfterStep: 3) }
    }

    func testWarmupScheduleMatchesDiffusers() throws {
        try run("warmup") { EMAModel(parameters: $0, decay: 0.999, useEMAWarmup: true, invGamma: 1, power: 2.0 / 3.0) }
    }

    func testSavedStateResumesTheSameTrajectory() throws {
        try run("warmup", { EMAModel(parameters: $0, decay: 0.999, useEMAWarmup: true) }, resumeAt: 7)
    }

    func testStateOfOtherSettingsIsRefused() throws {
        let p = [Tensor(shape: [2], values: [1, 2])]
        let a = EMAModel(parameters: p, decay: 0.99)
        XCTAssertThrowsError(try EMAModel(parameters: p, decay: 0.9).load(stateDict: a.stateDict())) {
            XCTAssertTrue("\($0)".contains("other [ema] settings"), "\($0)")
        }
        XCTAssertThrowsError(try EMAModel(parameters: p + p, decay: 0.99).load(stateDict: a.stateDict())) {
            XCTAssertTrue("\($0)".contains("trains 2 parameters"), "\($0)")
        }
    }

    func testCopyWritesTheAverageIntoTheParameters() {
        let p = Tensor(shape: [2], values: [0, 0])
        p.requiresGrad = true
        let ema = EMAModel(parameters: [p], decay: 0.5, useEMAWarmup: true)
        p.data[0] = 4
        ema.update([p])  // update 1: decay 0, shadow = p
        p.data[0] = 8
        ema.update([p])  // update 2: decay min(1 - 2^(-2/3), 0.5) = 0.370
        let d = Float(ema.decay(atStep: 2))
        ema.copy(to: [p])
        XCTAssertEqual(p.toArray()[0], 4 - (1 - d) * (4 - 8), accuracy: 1e-6)
    }
}
