import Foundation

/// Resampling filters, the same kernels and supports as Pillow's.
public enum ResampleFilter: Sendable, CaseIterable {
    /// Box (support 0.5): area averaging when downscaling.
    case box
    /// Triangle (support 1).
    case bilinear
    /// Keys cubic with a = -0.5 (support 2).
    case bicubic
    /// Lanczos with a = 3 (support 3): the default, sharpest for downscaling photos.
    case lanczos

    var support: Double {
        switch self {
        case .box: 0.5
        case .bilinear: 1
        case .bicubic: 2
        case .lanczos: 3
        }
    }

    func weight(_ x: Double) -> Double {
        switch self {
        case .box:
            return x > -0.5 && x <= 0.5 ? 1 : 0
        case .bilinear:
            let a = abs(x)
            return a < 1 ? 1 - a : 0
        case .bicubic:
            let a = -0.5, t = abs(x)
            if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
            if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
            return 0
        case .lanczos:
            return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0
        }
    }

    private func sinc(_ x: Double) -> Double {
        if x == 0 { return 1 }
        let px = x * Double.pi
        return sin(px) / px
    }
}

/// Fixed-point resampling weights for one axis, computed as Pillow computes them so
/// results match `Image.resize` exactly: the kernel is stretched by the downscale factor
/// (so a downscale averages every source pixel it covers, no aliasing), normalised to
/// sum 1, then rounded to 22 fractional bits.
struct ResampleWeights {
    static let precisionBits = 22
    let taps: Int                 // weights stored per output position
    let first: [Int]              // first source index for each output position
    let count: [Int]              // number of source pixels used
    let weights: [Int32]          // outSize * taps

    init(inSize: Int, outSize: Int, filter: ResampleFilter) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = filter.support * filterScale
        taps = Int(support.rounded(.up)) * 2 + 1
        var first = [Int](repeating: 0, count: outSize), count = first
        var weights = [Int32](repeating: 0, count: outSize * taps)
        var k = [Double](repeating: 0, count: taps)
        let one = Double(1 << Self.precisionBits)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0)
            let n = min(Int(center + support + 0.5), inSize) - lo
            var total = 0.0
            for x in 0..<n {
                k[x] = filter.weight((Double(x + lo) - center + 0.5) / filterScale)
                total += k[x]
            }
            for x in 0..<n {
                let w = total != 0 ? k[x] / total : k[x]
                weights[xx * taps + x] = Int32(w < 0 ? -0.5 + w * one : 0.5 + w * one)
            }
            first[xx] = lo
            count[xx] = n
        }
        self.first = first
        self.count = count
        self.weights = weights
    }
}

extension RGBImage {
    /// The image resampled to `width` x `height` with `filter` (Lanczos by default),
    /// matching Pillow's `Image.resize(size, filter)` on RGB images pixel for pixel:
    /// one pass per axis, each rounded to 8 bits, in Pillow's order (vertical first only
    /// when widening while shrinking the height, so the shrinking pass runs first).
    public func resized(width newWidth: Int, height newHeight: Int, filter: ResampleFilter = .lanczos) -> RGBImage {
        precondition(newWidth > 0 && newHeight > 0, "resize target must be positive, got \(newWidth)x\(newHeight)")
        if newWidth == width && newHeight == height { return self }
        if newWidth > width && newHeight < height {
            let v = ResampleWeights(inSize: height, outSize: newHeight, filter: filter)
            let h = ResampleWeights(inSize: width, outSize: newWidth, filter: filter)
            return resampleColumns(rowShift: 0, outHeight: newHeight, weights: v)
                .resampleRows(rowOffset: 0, rows: newHeight, outWidth: newWidth, weights: h)
        }
        var current = self
        let vertical = newHeight != height ? ResampleWeights(inSize: height, outSize: newHeight, filter: filter) : nil
        if newWidth != width {
            // Only the rows the vertical pass will read need the horizontal pass.
            var rowOffset = 0, rows = height
            if let v = vertical {
                rowOffset = v.first[0]
                rows = v.first[newHeight - 1] + v.count[newHeight - 1] - rowOffset
            }
            let h = ResampleWeights(inSize: width, outSize: newWidth, filter: filter)
            current = resampleRows(rowOffset: rowOffset, rows: rows, outWidth: newWidth, weights: h)
            if let v = vertical {
                return current.resampleColumns(rowShift: rowOffset, outHeight: newHeight, weights: v)
            }
            return current
        }
        return current.resampleColumns(rowShift: 0, outHeight: newHeight, weights: vertical!)
    }

    @inline(__always)
    private static func clip8(_ sum: Int) -> UInt8 {
        let v = sum >> ResampleWeights.precisionBits
        return v < 0 ? 0 : v > 255 ? 255 : UInt8(v)
    }

    private func resampleRows(rowOffset: Int, rows: Int, outWidth: Int, weights w: ResampleWeights) -> RGBImage {
        var out = [UInt8](repeating: 0, count: outWidth * rows * 3)
        let inWidth = width, taps = w.taps, half = Int32(1 << (ResampleWeights.precisionBits - 1))
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                w.weights.withUnsafeBufferPointer { k in
                    Self.parallelRows(rows) { range in
                        for y in range {
                            let inRow = src.baseAddress! + (y + rowOffset) * inWidth * 3
                            let outRow = dst.baseAddress! + y * outWidth * 3
                            for xx in 0..<outWidth {
                                let lo = w.first[xx], n = w.count[xx], kk = k.baseAddress! + xx * taps
                                var r = half, g = half, b = half
                                for x in 0..<n {
                                    let p = inRow + (lo + x) * 3, c = kk[x]
                                    r &+= Int32(p[0]) &* c; g &+= Int32(p[1]) &* c; b &+= Int32(p[2]) &* c
                                }
                                outRow[3 * xx] = Self.clip8(Int(r))
                                outRow[3 * xx + 1] = Self.clip8(Int(g))
                                outRow[3 * xx + 2] = Self.clip8(Int(b))
                            }
                        }
                    }
                }
            }
        }
        return RGBImage(width: outWidth, height: rows, pixels: out)
    }

    /// Vertical pass; `rowShift` is the first source row held in `self` (see `resized`).
    /// Accumulates whole rows so the inner loop runs over contiguous bytes (vectorised).
    private func resampleColumns(rowShift: Int, outHeight: Int, weights w: ResampleWeights) -> RGBImage {
        let rowBytes = width * 3, taps = w.taps
        var out = [UInt8](repeating: 0, count: rowBytes * outHeight)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                w.weights.withUnsafeBufferPointer { k in
                    Self.parallelRows(outHeight) { range in
                        // Int32 as in Pillow: |weights| sum to < 2 at 22 fractional bits, so
                        // 255 * that stays far below 2^31.
                        let acc = UnsafeMutablePointer<Int32>.allocate(capacity: rowBytes)
                        defer { acc.deallocate() }
                        for yy in range {
                            let lo = w.first[yy] - rowShift, n = w.count[yy], kk = k.baseAddress! + yy * taps
                            acc.update(repeating: Int32(1 << (ResampleWeights.precisionBits - 1)), count: rowBytes)
                            for y in 0..<n {
                                let row = src.baseAddress! + (lo + y) * rowBytes, c = kk[y]
                                for i in 0..<rowBytes { acc[i] &+= Int32(row[i]) &* c }
                            }
                            let outRow = dst.baseAddress! + yy * rowBytes
                            for i in 0..<rowBytes { outRow[i] = Self.clip8(Int(acc[i])) }
                        }
                    }
                }
            }
        }
        return RGBImage(width: width, height: outHeight, pixels: out)
    }

    /// Splits `count` rows into a few chunks run concurrently (results do not depend on
    /// the split: every output row is computed independently).
    private static func parallelRows(_ count: Int, _ body: (Range<Int>) -> Void) {
        let chunks = min(count, max(1, ProcessInfo.processInfo.activeProcessorCount * 2))
        if chunks <= 1 || count < 16 { body(0..<count); return }
        withoutActuallyEscaping(body) { escaping in
            // Each chunk writes a disjoint range of rows of a buffer the caller owns and
            // that outlives this call; Dispatch needs the closure to be Sendable.
            let sendable = unsafeBitCast(escaping, to: (@Sendable (Range<Int>) -> Void).self)
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                sendable((count * c / chunks)..<(count * (c + 1) / chunks))
            }
        }
    }
}
