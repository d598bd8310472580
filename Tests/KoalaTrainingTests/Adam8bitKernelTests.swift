import XCTest
import KoalaTestSupport
import KoalaTensor
@testable import KoalaTraining

/// The vector kernels (CKernels/adam8bit.c) against the Swift code they replace, bit for
/// bit, on inputs chosen to break a kernel that rounds, clamps or bins differently:
/// values on and next to the bin edges where the code changes, code midpoints, zero
/// blocks, subnormal and huge absmax, NaN and infinity, short last blocks.
final class Adam8bitKernelTests: XCTestCase {
    /// The vector kernels this CPU runs, or a skip naming what is missing.
    func vectorKernels() throws -> [BlockwiseQuantizer.Kernel] {
        let kernels = BlockwiseQuantizer.Kernel.available.filter { $0 != .swift }
        if !kernels.contains(.avx512) { print("Adam8bitKernelTests: no AVX-512F/BW/VL on this CPU, the AVX-512 kernel is not tested") }
        try XCTSkipIf(kernels.isEmpty, "this CPU has no AVX2+FMA: only the Swift code runs")
        return kernels
    }

    /// Values of x (with absmax 1) whose bin index is exactly where `table` changes code,
    /// each with its float neighbours.
    func binEdgeValues(_ q: BlockwiseQuantizer) -> [Float] {
        var out: [Float] = []
        for k in 1..<BlockwiseQuantizer.binCount where q.table[k] != q.table[k - 1] {
            // ((x + 1) * 0.5) * 65535 + 0.5 == k in exact arithmetic.
            let x = Float(2 * (Double(k) - 0.5) / 65535 - 1)
            out += [x.nextDown, x, x.nextUp]
        }
        return out
    }

    /// Blocks of `blockSize` values of many kinds, `count` values in all.
    func edgeCaseInput(count: Int, blockSize: Int, seed: UInt64) -> [Float] {
        var rng = RandomGenerator(seed: seed)
        let edges = binEdgeValues(.signed) + binEdgeValues(.unsigned)
        let mids = (0..<255).map { 0.5 * (QuantizationMap.signed[$0] + QuantizationMap.signed[$0 + 1]) }
        var x = [Float](repeating: 0, count: count)
        var lo = 0, block = 0
        while lo < count {
            let n = min(blockSize, count - lo)
            let scale = Float(pow(10, Double(rng.uniform()) * 40 - 30))
            for j in 0..<n {
                let r = rng.normal()
                switch block % 9 {
                case 0: x[lo + j] = r * scale
                case 1: x[lo + j] = 0
                case 2: x[lo + j] = j == 0 ? 1 : edges[rng.int(below: edges.count)]
                case 3: x[lo + j] = j == 0 ? -scale : scale * mids[rng.int(below: mids.count)]
                case 4: x[lo + j] = r * (Float.leastNormalMagnitude / 8)  // subnormal absmax: its reciprocal is infinite
                case 5: x[lo + j] = j == n / 2 ? r : 0
                case 6: x[lo + j] = j % 5 == 0 ? (j % 2 == 0 ? .nan : -.infinity) : r
                case 7: x[lo + j] = r * Float(pow(10, Double(rng.uniform()) * 16 - 8))  // seven decades in one block
                default: x[lo + j] = abs(r) * 3e38
                }
            }
            lo += n
            block += 1
        }
        return x
    }

    func testVectorQuantizeGivesTheSwiftCodesAndAbsmax() throws {
        for kernel in try vectorKernels() {
            for (blockSize, count) in [(256, 256 * 40 + 13), (64, 64 * 30 + 1), (100, 1000), (4096, 3 * 4096 + 7), (7, 300)] {
                let values = edgeCaseInput(count: count, blockSize: blockSize, seed: UInt64(blockSize))
                for (tag, q) in [("signed", BlockwiseQuantizer.signed), ("unsigned", BlockwiseQuantizer.unsigned)] {
                    for input in [values, values.map { abs($0) }] {
                        let t = Tensor(shape: [count], values: input)
                        let reference = q.quantize(t, blockSize: blockSize, kernel: .swift)
                        let vector = q.quantize(t, blockSize: blockSize, kernel: kernel)
                        let where_ = "\(kernel), \(tag), blocks of \(blockSize)"
                        XCTAssertEqual(zip(vector.codes, reference.codes).filter { $0 != $1 }.count, 0, "\(where_): codes differing")
                        XCTAssertEqual(vector.absmax.map(\.bitPattern), reference.absmax.map(\.bitPattern), "\(where_): absmax")
                    }
                }
            }
        }
    }

    /// Gradients for step `t`: per 256-value block a different kind (ordinary, zero,
    /// vanishing, huge, mixed decades), so moments cross zero, underflow and span the map.
    func gradient(count: Int, step t: Int) -> Tensor {
        var rng = RandomGenerator(seed: UInt64(100 + t))
        let g = (0..<count).map { i -> Float in
            let r = rng.normal()
            switch (i / 256 + t) % 6 {
            case 0: return r * 1e-3
            case 1: return t == 1 ? 0 : r * 1e-3  // a zero block: absmax 0 at the first step
            case 2: return r * 1e-25  // g² underflows
            case 3: return r * 1e15
            case 4: return r * Float(pow(10, Double(i % 16) - 10))
            default: return i % 7 == 0 ? 0 : r
            }
        }
        return Tensor(shape: [count], values: g)
    }

    func testVectorAdamStepGivesTheSwiftStatesAndParameters() throws {
        for kernel in try vectorKernels() {
            for weightDecay in [0.0, 0.01] {
                let count = 20 * 256 + 77  // quantized (>= 4096 values), with a short last block
                let reference = Adam8bit(learningRate: 1e-3, weightDecay: weightDecay)
                let vector = Adam8bit(learningRate: 1e-3, weightDecay: weightDecay)
                reference.kernel = .swift
                vector.kernel = kernel
                let init_ = Tensor.randn([count], seed: 5).toArray()
                let pr = Tensor(shape: [count], values: init_), pv = Tensor(shape: [count], values: init_)
                for t in 1...6 {
                    let g = gradient(count: count, step: t)
                    pr.grad = g
                    pv.grad = g
                    reference.learningRate = 1e-3 / Double(t)
                    vector.learningRate = 1e-3 / Double(t)
                    reference.step([pr])
                    vector.step([pv])
                    guard case .quantized(let qr)? = reference.slots[0], case .quantized(let qv)? = vector.slots[0] else {
                        return XCTFail("\(count) values must be quantized")
                    }
                    let k = "\(kernel), weight decay \(weightDecay), step \(t)"
                    XCTAssertEqual(zip(qv.state1, qr.state1).filter { $0 != $1 }.count, 0, "\(k): state1 codes differing")
                    XCTAssertEqual(zip(qv.state2, qr.state2).filter { $0 != $1 }.count, 0, "\(k): state2 codes differing")
                    XCTAssertEqual(qv.absmax1.map(\.bitPattern), qr.absmax1.map(\.bitPattern), "\(k): absmax1")
                    XCTAssertEqual(qv.absmax2.map(\.bitPattern), qr.absmax2.map(\.bitPattern), "\(k): absmax2")
                    let differing = zip(pv.toArray(), pr.toArray()).filter { $0.bitPattern != $1.bitPattern }.count
                    XCTAssertEqual(differing, 0, "\(k): parameters differing")
                }
            }
        }
    }
}
