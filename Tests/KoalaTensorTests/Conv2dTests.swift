import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class Conv2dTests: XCTestCase {
    /// name -> (stride, padding, has bias), as in tools/reference/fixtures_convnorm.py.
    static let cases: [(String, Int, Int, Bool)] = [
        ("k3s1p1", 1, 1, true), ("k3s1p0", 1, 0, false), ("k3s2p1", 2, 1, true), ("k3s2p0", 2, 0, false),
        ("k1s1p0", 1, 0, true), ("k1s2p0", 2, 0, false), ("k1s1p1", 1, 1, true), ("k3x1s1p1", 1, 1, true),
    ]

    // Winograd on every size, so the small fixtures take it (512 px models use it from
    // 32x32 outputs up).
    override func setUp() { Conv2dTuning.winogradMinTiles = 1 }
    override func tearDown() { Conv2dTuning.winogradMinTiles = 256 }

    /// Runs `body` with im2col tiles of one output row and Winograd bands of one tile
    /// row, so small inputs take the tiled paths.
    func withTinyTiles<T>(_ body: () throws -> T) rethrows -> T {
        let saved = (Conv2dTuning.maxColumnFloats, Conv2dTuning.winogradBandFloats, Conv2dTuning.maxWeightPartialFloats)
        Conv2dTuning.maxColumnFloats = 1
        Conv2dTuning.winogradBandFloats = 1
        defer { (Conv2dTuning.maxColumnFloats, Conv2dTuning.winogradBandFloats, Conv2dTuning.maxWeightPartialFloats) = saved }
        return try body()
    }

    /// Runs `body` with 3x3 stride-1 convolutions on im2col instead of Winograd.
    func withoutWinograd<T>(_ body: () throws -> T) rethrows -> T {
        Conv2dTuning.winograd = false
        defer { Conv2dTuning.winograd = true }
        return try body()
    }

    func checkFixture(_ name: String, stride: Int, padding: Int, hasBias: Bool) throws {
        let f = try Fixtures.open("convnorm")
        let p = "conv.\(name)"
        let x = try f.tensor("\(p).x"), w = try f.tensor("\(p).weight")
        let b = hasBias ? try f.tensor("\(p).bias") : nil
        for t in [x, w] + (b.map { [$0] } ?? []) { t.requiresGrad = true }
        let out = x.conv2d(w, b, stride: stride, padding: padding)
        assertClose(out, try f.tensor("\(p).out"), "\(name) forward")
        out.backward(try f.tensor("\(p).grad_out"))
        assertClose(x.grad!, try f.tensor("\(p).grad_x"), "\(name) grad x")
        assertClose(w.grad!, try f.tensor("\(p).grad_weight"), "\(name) grad weight")
        if let b { assertClose(b.grad!, try f.tensor("\(p).grad_bias"), "\(name) grad bias") }
    }

    func testConv2dMatchesTorch() throws {
        for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
    }

    func testConv2dMatchesTorchWithOneRowTiles() throws {
        try withTinyTiles {
            for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
        }
    }

    func testConv2dMatchesTorchWithIm2col() throws {
        try withoutWinograd {
            for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
            try withTinyTiles {
                for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
                // The weight gradient summed once over tiles (the path of wide layers).
                Conv2dTuning.maxWeightPartialFloats = 0
                for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
            }
            // Both ways of sharing an im2col GEMM between threads: by output channels
            // (wide layers) and by tiles.
            for split in [true, false] {
                Conv2dTuning.channelSplit = split
                defer { Conv2dTuning.channelSplit = nil }
                for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
                try withTinyTiles {
                    for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
                }
            }
        }
    }

    func testWinogradMatchesIm2colOnLargerInput() {
        // Odd sizes (partial 2x2 tiles), more channels, several bands per image.
        let x = Tensor.randn([2, 16, 13, 11], seed: 1), w = Tensor.randn([24, 16, 3, 3], seed: 2), b = Tensor.randn([24], seed: 3)
        for padding in [0, 1] {
            let reference = withoutWinograd { noGrad { x.conv2d(w, b, padding: padding) } }
            assertClose(noGrad { x.conv2d(w, b, padding: padding) }, reference, atol: 1e-4, "padding \(padding)")
            withTinyTiles { assertClose(noGrad { x.conv2d(w, b, padding: padding) }, reference, atol: 1e-4, "tiny bands") }
        }
    }

    /// The wide-layer path (weights transformed per block of output channels), forced on
    /// a small layer with blocks of 5 channels, the last one partial: forward, input
    /// gradient (itself a convolution taking the same path) and the torch fixtures.
    func testWinogradByChannelBlocksMatchesIm2col() throws {
        let saved = (Conv2dTuning.winogradMaxWeightFloats, Conv2dTuning.winogradOutputBlock)
        Conv2dTuning.winogradMaxWeightFloats = 0
        Conv2dTuning.winogradOutputBlock = 5
        defer { (Conv2dTuning.winogradMaxWeightFloats, Conv2dTuning.winogradOutputBlock) = saved }
        let g = ConvGeometry(n: 2, c: 16, h: 13, w: 11, o: 24, kh: 3, kw: 3, stride: 1, pad: 1, oh: 13, ow: 11)
        XCTAssertFalse(Winograd.applies(g))
        XCTAssertTrue(Winograd.appliesByChannelBlocks(g))
        let w = Tensor.randn([24, 16, 3, 3], seed: 2), b = Tensor.randn([24], seed: 3), gOut = Tensor.randn([2, 24, 13, 11], seed: 4)
        for padding in [0, 1] {
            func run() -> (Tensor, Tensor) {
                let x = Tensor.randn([2, 16, 13, 11], seed: 1)
                x.requiresGrad = true
                let out = x.conv2d(w, b, padding: padding)
                out.backward(padding == 1 ? gOut : gOut.slice(2, 0, 11).slice(3, 0, 9).contiguous())
                return (out, x.grad!)
            }
            let (out, gx) = run()
            let (refOut, refGx) = withoutWinograd(run)
            assertClose(out, refOut, atol: 1e-4, "padding \(padding) forward")
            assertClose(gx, refGx, atol: 1e-4, "padding \(padding) input gradient")
        }
        for (name, s, p, bias) in Self.cases { try checkFixture(name, stride: s, padding: p, hasBias: bias) }
    }

    func testConv2dGradients() {
        for (k, s, p) in [(3, 1, 1), (3, 2, 1), (3, 1, 0), (1, 1, 0), (1, 2, 0)] {
            gradCheck([Tensor.randn([2, 3, 5, 6], seed: 1), Tensor.randn([4, 3, k, k], seed: 2), Tensor.randn([4], seed: 3)]) {
                $0[0].conv2d($0[1], $0[2], stride: s, padding: p)
            }
        }
        withTinyTiles {
            gradCheck([Tensor.randn([2, 3, 5, 6], seed: 4), Tensor.randn([4, 3, 3, 3], seed: 5)]) {
                $0[0].conv2d($0[1], nil, stride: 2, padding: 1)
            }
            gradCheck([Tensor.randn([1, 3, 5, 6], seed: 6), Tensor.randn([4, 3, 3, 3], seed: 7)]) {
                $0[0].conv2d($0[1], nil, padding: 1)
            }
        }
        withoutWinograd {
            gradCheck([Tensor.randn([2, 3, 5, 6], seed: 8), Tensor.randn([4, 3, 3, 3], seed: 9), Tensor.randn([4], seed: 10)]) {
                $0[0].conv2d($0[1], $0[2], padding: 1)
            }
        }
    }

    func testFrozenWeightGetsNoGradient() {
        let x = Tensor.randn([1, 2, 4, 4], seed: 1), w = Tensor.randn([3, 2, 3, 3], seed: 2), b = Tensor.randn([3], seed: 3)
        x.requiresGrad = true
        x.conv2d(w, b, padding: 1).backward()
        XCTAssertNotNil(x.grad)
        XCTAssertNil(w.grad)
        XCTAssertNil(b.grad)
    }

    func testOutputShape() {
        let x = Tensor.zeros([2, 3, 9, 8])
        XCTAssertEqual(x.conv2d(Tensor.zeros([5, 3, 3, 3]), stride: 2, padding: 1).shape, [2, 5, 5, 4])
        XCTAssertEqual(x.conv2d(Tensor.zeros([5, 3, 3, 3])).shape, [2, 5, 7, 6])
        XCTAssertEqual(x.conv2d(Tensor.zeros([5, 3, 1, 1])).shape, [2, 5, 9, 8])
    }
}
