import XCTest
import KoalaTestSupport
import KoalaTensor
@testable import KoalaTraining

final class QuantizationTests: XCTestCase {
    func testDynamicMapsEqualBitsandbytes() throws {
        let f = try Fixtures.open("optim")
        XCTAssertEqual(QuantizationMap.signed, try f.tensor("map.signed").toArray())
        XCTAssertEqual(QuantizationMap.unsigned, try f.tensor("map.unsigned").toArray())
    }

    func testBlockwiseQuantizeMatchesBitsandbytesCPU() throws {
        let f = try Fixtures.open("optim")
        let x = try f.tensor("quant.x")
        for (tag, quantizer) in [("signed", BlockwiseQuantizer.signed), ("unsigned", BlockwiseQuantizer.unsigned)] {
            let input = tag == "signed" ? x : Tensor(shape: x.shape, values: x.toArray().map { abs($0) })
            let expectedCodes = try f.tensor("quant.\(tag).codes").toArray().map { UInt8($0) }
            var absmax: [Float] = []
            // Every kernel this CPU runs (the Swift code and the vector kernels).
            for kernel in BlockwiseQuantizer.Kernel.available {
                let codes: [UInt8]
                (codes, absmax) = quantizer.quantize(input, kernel: kernel)
                let mismatches = zip(codes, expectedCodes).filter { $0 != $1 }.count
                XCTAssertEqual(mismatches, 0, "\(tag), \(kernel): codes differing from bitsandbytes")
                XCTAssertEqual(absmax, try f.tensor("quant.\(tag).absmax").toArray(), "\(tag), \(kernel) absmax")
            }
            // Decoding bitsandbytes' own codes must give its dequantized values exactly.
            let decoded = quantizer.dequantize(codes: expectedCodes, absmax: absmax, shape: x.shape)
            XCTAssertEqual(decoded.toArray(), try f.tensor("quant.\(tag).dequant").toArray(), "\(tag) dequantize")
        }
    }

    func testRoundTripErrorIsBoundedByCodeSpacing() {
        let x = Tensor.randn([1000], seed: 3)
        let q = BlockwiseQuantizer.signed
        let (codes, absmax) = q.quantize(x)
        let y = q.dequantize(codes: codes, absmax: absmax, shape: [1000]).toArray()
        let xs = x.toArray()
        for i in 0..<1000 {
            let a = absmax[i / 256]
            // Largest gap between neighbouring codes is near ±1 (about 0.014): half of it, plus the bin width.
            XCTAssertLessThanOrEqual(abs(xs[i] - y[i]), a * (0.0075 + 3.1e-5), "element \(i)")
        }
        // The block extremes are represented exactly (code ±1 times absmax).
        for b in 0..<absmax.count {
            let block = xs[(b * 256)..<min(1000, b * 256 + 256)]
            XCTAssertEqual(absmax[b], block.map { abs($0) }.max()!)
        }
    }

    func testZeroBlockGetsZeroAbsmaxAndDecodesToZero() {
        let x = Tensor.zeros([300])
        let (codes, absmax) = BlockwiseQuantizer.unsigned.quantize(x)
        XCTAssertEqual(absmax, [0, 0])
        XCTAssertEqual(Set(codes), [0])
        XCTAssertEqual(BlockwiseQuantizer.unsigned.dequantize(codes: codes, absmax: absmax, shape: [300]).toArray(), [Float](repeating: 0, count: 300))
    }
}
