import XCTest
import KoalaTestSupport
@testable import KoalaTensor

/// TorchGenerator against draws from `torch.Generator().manual_seed(s)` (fixtures_torchrng.py):
/// every value must have the same float32 bit pattern.
final class TorchGeneratorTests: XCTestCase {
    static let seeds: [UInt64] = [0, 42, 1234, (1 << 32) + 5]

    /// Compares bit patterns, reporting the first few differing elements.
    func assertBitsEqual(_ actual: [Float], _ expected: [Float], _ what: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(what): count", file: file, line: line)
        var failures = 0
        for i in 0..<min(actual.count, expected.count) where actual[i].bitPattern != expected[i].bitPattern {
            failures += 1
            if failures <= 3 {
                XCTFail("\(what)[\(i)]: \(actual[i]) (0x\(String(actual[i].bitPattern, radix: 16))), "
                        + "expected \(expected[i]) (0x\(String(expected[i].bitPattern, radix: 16)))", file: file, line: line)
            }
        }
        if failures > 3 { XCTFail("\(what): \(failures) elements differ in all", file: file, line: line) }
    }

    /// The two checksums of fixtures_torchrng.py over all float32 bit patterns.
    func checksums(_ values: [Float]) -> [Float] {
        let prime: UInt64 = 16_777_213
        var plain: UInt64 = 0, weighted: UInt64 = 0
        for (i, v) in values.enumerated() {
            let b = UInt64(v.bitPattern) % prime
            plain += b
            weighted += b * (UInt64(i + 1) % prime) % prime
        }
        return [Float(plain % prime), Float(weighted % prime)]
    }

    func testLatentShapesMatchTorch() throws {
        let f = try Fixtures.open("torchrng")
        for seed in Self.seeds {
            for (name, shape) in [("1x4x64x64", [1, 4, 64, 64]), ("2x4x128x128", [2, 4, 128, 128])] {
                var g = TorchGenerator(seed: seed)
                let out = g.randn(shape)
                XCTAssertEqual(out.shape, shape)
                let x = out.toArray()
                let key = "s\(seed).randn.\(name)"
                assertBitsEqual(Array(x.prefix(256)), try f.tensor("\(key).head").toArray(), "\(key) head")
                assertBitsEqual(Array(x.suffix(256)), try f.tensor("\(key).tail").toArray(), "\(key) tail")
                let positions = try f.tensor("positions.\(x.count)").toArray().map { Int($0) }
                assertBitsEqual(positions.map { x[$0] }, try f.tensor("\(key).at").toArray(), "\(key) at positions")
                XCTAssertEqual(checksums(x), try f.tensor("\(key).checksums").toArray(), "\(key) checksums of all values")
            }
        }
    }

    func testSmallAndOddSizesMatchTorch() throws {
        let f = try Fixtures.open("torchrng")
        for seed in Self.seeds {
            for n in [1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 1000, 1001] {
                var g = TorchGenerator(seed: seed)
                let key = "s\(seed).randn.\(n)"
                assertBitsEqual(g.randn([n]).toArray(), try f.tensor(key).toArray(), key)
            }
        }
    }

    func testRandMatchesTorch() throws {
        let f = try Fixtures.open("torchrng")
        for seed in Self.seeds {
            for (name, shape) in [("1", [1]), ("5", [5]), ("16", [16]), ("17", [17]), ("3x64", [3, 64])] {
                var g = TorchGenerator(seed: seed)
                let key = "s\(seed).rand.\(name)"
                let out = g.rand(shape)
                XCTAssertEqual(out.shape, shape)
                assertBitsEqual(out.toArray(), try f.tensor(key).toArray(), key)
            }
        }
    }

    func testRandintMatchesTorch() throws {
        let f = try Fixtures.open("torchrng")
        for seed in Self.seeds {
            for k in [1, 4, 17] {
                var g = TorchGenerator(seed: seed)
                let key = "s\(seed).randint.0_1000.\(k)"
                XCTAssertEqual(g.randint(low: 0, high: 1000, count: k), try f.tensor(key).toArray().map { Int($0) }, key)
            }
            var g = TorchGenerator(seed: seed)
            XCTAssertEqual(g.randint(low: -500, high: 500, count: 6),
                           try f.tensor("s\(seed).randint.-500_500.6").toArray().map { Int($0) }, "seed \(seed), -500..<500")
            // Ranges of 2^32 or more take 64-bit draws; stored as [high 20 bits; low 20 bits].
            g = TorchGenerator(seed: seed)
            let halves = try f.tensor("s\(seed).randint.0_2e40.5").toArray().map { Int($0) }
            let expected = (0..<5).map { halves[$0] << 20 + halves[5 + $0] }
            XCTAssertEqual(g.randint(low: 0, high: 1 << 40, count: 5), expected, "seed \(seed), 0..<2^40")
        }
    }

    func testConsecutiveDrawsShareOneStream() throws {
        let f = try Fixtures.open("torchrng")
        for seed in Self.seeds {
            var g = TorchGenerator(seed: seed)
            let p = "s\(seed).seq"
            assertBitsEqual(g.randn([3]).toArray(), try f.tensor("\(p).0.randn3").toArray(), "\(p) randn(3)")
            assertBitsEqual(g.rand([5]).toArray(), try f.tensor("\(p).1.rand5").toArray(), "\(p) rand(5)")
            assertBitsEqual(g.randn([20]).toArray(), try f.tensor("\(p).2.randn20").toArray(), "\(p) randn(20)")
            assertBitsEqual(g.randn([2]).toArray(), try f.tensor("\(p).3.randn2").toArray(), "\(p) randn(2)")
            XCTAssertEqual(g.randint(low: 0, high: 1000, count: 4),
                           try f.tensor("\(p).4.randint4").toArray().map { Int($0) }, "\(p) randint")
            assertBitsEqual(g.randn([1]).toArray(), try f.tensor("\(p).5.randn1").toArray(), "\(p) randn(1)")
            assertBitsEqual(g.randn([1]).toArray(), try f.tensor("\(p).6.randn1").toArray(), "\(p) second randn(1)")
            // A fresh generator with the same seed is what manual_seed on a used one gives.
            g = TorchGenerator(seed: seed)
            assertBitsEqual(g.randn([2]).toArray(), try f.tensor("\(p).7.reseeded.randn2").toArray(), "\(p) reseeded")
        }
    }

    func testSeedUsesLow32BitsAndCopiesResume() {
        var a = TorchGenerator(seed: (1 << 32) + 5), b = TorchGenerator(seed: 5)
        XCTAssertEqual(a.randn([40]).toArray(), b.randn([40]).toArray())
        _ = a.randn([3])  // leaves a cached normal
        let snapshot = a
        let next = a.randn([5]).toArray()
        var c = snapshot
        XCTAssertEqual(c.randn([5]).toArray(), next)
    }

    func testBothSourcesServeTheProtocol() {
        func draw<R: TensorRandomSource>(_ source: inout R) -> (Tensor, Tensor, [Int]) {
            (source.randn([2, 8]), source.rand([3]), source.randint(low: 10, high: 20, count: 50))
        }
        var native = RandomGenerator(seed: 1)
        var torch = TorchGenerator(seed: 1)
        for (n, r, i) in [draw(&native), draw(&torch)] {
            XCTAssertEqual(n.shape, [2, 8])
            XCTAssertTrue(r.toArray().allSatisfy { $0 >= 0 && $0 < 1 })
            XCTAssertTrue(i.allSatisfy { (10..<20).contains($0) })
        }
    }
}
