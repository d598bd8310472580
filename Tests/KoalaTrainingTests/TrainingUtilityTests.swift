import Foundation
import XCTest
import KoalaTestSupport
import KoalaTensor
@testable import KoalaTraining

final class GradientClippingTests: XCTestCase {
    func testClipGradNormMatchesTorch() throws {
        let f = try Fixtures.open("optim")
        for tag in ["clip", "noclip", "clip_small"] {
            let params = try (0..<3).map { i -> Tensor in
                let g = try f.tensor("\(tag).grad\(i)")
                let p = Tensor.zeros(g.shape)
                p.grad = g
                return p
            }
            let maxNorm = Double(try f.tensor("\(tag).max_norm").item)
            let total = GradientClipping.clipGradNorm(params, maxNorm: maxNorm)
            let expected = Double(try f.tensor("\(tag).total_norm").item)
            XCTAssertEqual(total, expected, accuracy: expected * 1e-6, "\(tag) total norm")
            for (i, p) in params.enumerated() {
                assertClose(p.grad!, try f.tensor("\(tag).clipped\(i)"), atol: 1e-7, rtol: 1e-6, "\(tag) grad \(i)")
            }
        }
    }

    func testParametersWithoutGradientAreIgnored() {
        let a = Tensor.zeros([2]), b = Tensor.zeros([3])
        a.grad = Tensor(shape: [2], values: [3, 4])
        XCTAssertEqual(GradientClipping.clipGradNorm([a, b], maxNorm: 1), 5, accuracy: 1e-12)
        XCTAssertNil(b.grad)
        XCTAssertEqual(a.grad!.toArray()[0], Float(3 / (5 + 1e-6)), accuracy: 1e-7)
    }
}

final class LRScheduleTests: XCTestCase {
    func testSchedulesMatchDiffusers() throws {
        let f = try Fixtures.open("optim")
        let warmup = Int(f.metadata["lr_warmup"]!)!, total = Int(f.metadata["lr_total"]!)!
        let base = Double(f.metadata["lr_base"]!)!
        for kind in LRScheduleKind.allCases {
            let expected = try f.tensor("lr.\(kind.rawValue)").toArray()
            let schedule = LRSchedule(kind: kind, baseLearningRate: base, warmupSteps: warmup, totalSteps: total)
            XCTAssertEqual(expected.count, 25)
            for (step, e) in expected.enumerated() {
                let m = schedule.multiplier(atStep: step)
                XCTAssertEqual(Float(m), e, accuracy: 1e-6, "\(kind.rawValue) step \(step)")
                XCTAssertEqual(schedule.learningRate(atStep: step), base * m, accuracy: 1e-18)
            }
        }
    }

    func testKindsParseFromRecipeNames() {
        XCTAssertEqual(LRScheduleKind(rawValue: "constant_with_warmup"), .constantWithWarmup)
        XCTAssertEqual(LRScheduleKind(rawValue: "cosine"), .cosine)
        XCTAssertNil(LRScheduleKind(rawValue: "polynomial"))
    }
}

final class OptimizerStateTests: XCTestCase {
    /// Two parameters (one quantized, one float32 under Adam8bit) and a gradient sequence.
    func run(_ opt: any Optimizer, _ params: [Tensor], steps: Range<Int>) {
        for t in steps {
            for (i, p) in params.enumerated() { p.grad = Tensor.randn(p.shape, seed: UInt64(100 * t + i)) }
            opt.learningRate = 1e-3 * Double(1 + t % 3)
            opt.step(params)
            opt.zeroGrad(params)
        }
    }

    func checkResumeIsIdentical(_ make: () -> any Optimizer) throws {
        let straight = [Tensor.randn([5000], seed: 1), Tensor.randn([40, 10], seed: 2)]
        let opt = make()
        run(opt, straight, steps: 0..<12)

        let resumed = [Tensor.randn([5000], seed: 1), Tensor.randn([40, 10], seed: 2)]
        let first = make()
        run(first, resumed, steps: 0..<5)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("koala-optim-\(UUID().uuidString).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try first.stateDict().save(to: path)
        let second = make()
        second.learningRate = 42
        try second.load(stateDict: OptimizerState.load(from: path))
        XCTAssertEqual(second.learningRate, first.learningRate)
        run(second, resumed, steps: 5..<12)

        for (a, b) in zip(straight, resumed) { XCTAssertEqual(a.toArray(), b.toArray()) }
        let s1 = opt.stateDict(), s2 = second.stateDict()
        XCTAssertEqual(s1.metadata, s2.metadata)
        XCTAssertEqual(Set(s1.tensors.keys), Set(s2.tensors.keys))
        for (k, t) in s1.tensors { XCTAssertEqual(t.toArray(), s2.tensors[k]!.toArray(), k) }
    }

    func testAdam8bitResumeContinuesIdentically() throws {
        try checkResumeIsIdentical { Adam8bit.adamW(weightDecay: 0.01) }
    }

    func testAdamWResumeContinuesIdentically() throws {
        try checkResumeIsIdentical { AdamW() }
    }

    func testPackedCodesRoundTrip() throws {
        let codes: [UInt8] = (0..<1000).map { UInt8(($0 * 37 + $0 / 7) % 256) }
        XCTAssertEqual(try Adam8bit.unpack(Adam8bit.pack(codes), count: 1000), codes)
    }

    func testLoadingAnotherOptimizersStateFailsClearly() {
        let p = Tensor.randn([10], seed: 1)
        p.grad = Tensor.ones([10])
        let a = AdamW()
        a.step([p])
        XCTAssertThrowsError(try Adam8bit().load(stateDict: a.stateDict())) { error in
            XCTAssertTrue("\(error)".contains("'adamw', not 'adam8bit'"), "\(error)")
        }
    }

    func testFactoryDefaults() {
        let a = OptimizerKind.adamw8bit.make(learningRate: 1e-4) as! Adam8bit
        XCTAssertEqual(a.weightDecay, 0.01)
        XCTAssertEqual((OptimizerKind.adam8bit.make(learningRate: 1e-4) as! Adam8bit).weightDecay, 0)
        XCTAssertTrue(OptimizerKind.adamw.make(learningRate: 1e-4) is AdamW)
    }
}
