import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class RandomGeneratorTests: XCTestCase {
    func testMatchesStdMT19937() {
        // std::mt19937 with the default seed 5489 yields 4123659995 as its 10000th value.
        var g = RandomGenerator(seed: 5489)
        var v: UInt32 = 0
        for _ in 0..<10000 { v = g.nextUInt32() }
        XCTAssertEqual(v, 4_123_659_995)
    }

    func testSameSeedSameNumbersAndSnapshotsResume() {
        var a = RandomGenerator(seed: 42)
        _ = (0..<10).map { _ in a.normal() }
        let snapshot = a
        let next = (0..<5).map { _ in a.normal() }
        var b = snapshot
        XCTAssertEqual((0..<5).map { _ in b.normal() }, next)
    }

    func testNormalMoments() {
        let t = Tensor.randn([100_000], seed: 3).toArray()
        let mean = t.reduce(0, +) / Float(t.count)
        let variance = t.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(t.count)
        XCTAssertEqual(mean, 0, accuracy: 0.02)
        XCTAssertEqual(variance, 1, accuracy: 0.02)
    }
}
