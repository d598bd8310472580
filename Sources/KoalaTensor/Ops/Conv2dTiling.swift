import Foundation

extension Tensor {
    /// Output tiles (image, rows) of balanced sizes: at most `tileRows` rows, and at
    /// least one tile per thread.
    static func convTiles(_ g: ConvGeometry, onePerThread: Bool = true) -> [(img: Int, rows: Range<Int>)] {
        let perThread = onePerThread ? (Parallel.threads + g.n - 1) / g.n : 1
        let perImage = min(g.oh, max((g.oh + g.tileRows - 1) / g.tileRows, perThread))
        var tiles: [(img: Int, rows: Range<Int>)] = []
        for img in 0..<g.n {
            for t in 0..<perImage { tiles.append((img, (g.oh * t / perImage)..<(g.oh * (t + 1) / perImage))) }
        }
        return tiles
    }

    /// Wide layers on small images (more output channels per thread than output
    /// pixels) unfold one tile at a time and split its GEMM by output channels: with a
    /// tile per thread every thread would repack the whole weight (118 MB for the
    /// 2560->1280 decoder convolutions' input gradient at 16x16).
    static func splitsChannels(_ g: ConvGeometry) -> Bool {
        Conv2dTuning.channelSplit ?? (g.o * Parallel.threads > g.outPlane)
    }

    /// Splits the tiles between threads; each thread unfolds its tiles into its own
    /// column buffer and multiplies with single-threaded GEMMs. Threads never wait on
    /// each other, and unfolding overlaps with the other thread's GEMM.
    /// `body(chunkStart, tiles, col)`.
    static func forEachTileChunk(_ g: ConvGeometry,
                                 _ body: (Int, ArraySlice<(img: Int, rows: Range<Int>)>, UnsafeMutablePointer<Float>) -> Void) {
        let tiles = convTiles(g)
        BLAS.singleThreaded {
            Parallel.forEach(tiles.count) { range in
                let col = g.columnBuffer(for: tiles[...])
                defer { col.deallocate() }
                body(range.lowerBound, tiles[range], col)
            }
        }
    }
}
