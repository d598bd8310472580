import Foundation
import CKernels

/// A float function of two floats, as a type so that the generic kernels below are
/// specialised per op (a closure would block vectorisation of the inner loops).
protocol BinaryKernel { static func apply(_ a: Float, _ b: Float) -> Float }
enum AddKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a + b } }
enum SubKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a - b } }
enum MulKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a * b } }
enum DivKernel: BinaryKernel { @inline(__always) static func apply(_ a: Float, _ b: Float) -> Float { a / b } }

/// Minimum elements per parallel chunk for memory-bound elementwise work.
let elementwiseGrain = 32768
/// Chunk bodies see at most this many elements, so multi-pass kernels (scale, then
/// kb_erf, then combine) reread their data from L1 instead of memory.
let elementwiseTile = 2048

@inline(__always)
func forEachTile(_ range: Range<Int>, _ body: (Int, Int) -> Void) {
    var i = range.lowerBound
    while i < range.upperBound {
        let m = min(elementwiseTile, range.upperBound - i)
        body(i, m)
        i += m
    }
}

/// Two operands broadcast to one output shape, with runs of dimensions that both
/// walk linearly merged into one. After merging, the common layouts become a single
/// inner loop: equal contiguous shapes are one dim with strides (1, 1), a scalar
/// operand has stride 0, a trailing-dims bias `[.., C] + [C]` is rows × C with strides
/// (1, 1) inside each row, and a per-channel `[N, C, H, W] * [N|1, C, 1, 1]` is
/// rows × HW with strides (1, 0).
struct BroadcastPlan {
    let outShape: [Int]
    var dims: [Int] = []
    var stridesA: [Int] = []
    var stridesB: [Int] = []

    init(_ a: Tensor, _ b: Tensor) {
        outShape = Tensor.broadcastShape(a.shape, b.shape)
        let r = outShape.count
        func paddedStrides(_ t: Tensor) -> [Int] {
            let lead = r - t.rank
            return (0..<r).map { i in i < lead || t.shape[i - lead] == 1 ? 0 : t.strides[i - lead] }
        }
        let sa = paddedStrides(a), sb = paddedStrides(b)
        // Build innermost first, merging a dim into the one inside it when both
        // operands step across the boundary without a jump.
        for i in stride(from: r - 1, through: 0, by: -1) where outShape[i] != 1 {
            if let inner = dims.last, sa[i] == stridesA.last! * inner, sb[i] == stridesB.last! * inner {
                dims[dims.count - 1] *= outShape[i]
            } else {
                dims.append(outShape[i]); stridesA.append(sa[i]); stridesB.append(sb[i])
            }
        }
        if dims.isEmpty { dims = [1]; stridesA = [0]; stridesB = [0] }
        dims.reverse(); stridesA.reverse(); stridesB.reverse()
    }
}

extension Tensor {
    /// The shape two shapes broadcast to (numpy/torch rules: align trailing dims; a
    /// dim of 1 stretches).
    public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int] {
        let r = max(a.count, b.count)
        return (0..<r).map { i in
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            boundaryCheck(da == db || da == 1 || db == 1, "cannot broadcast shapes \(a) and \(b)")
            return da == 1 ? db : da
        }
    }

    /// One run of `count` outputs; the specialisations are the loops the compiler
    /// vectorises.
    @inline(__always)
    static func binaryRun<K: BinaryKernel>(_: K.Type, _ a: UnsafePointer<Float>, _ sa: Int,
                                            _ b: UnsafePointer<Float>, _ sb: Int,
                                            _ o: UnsafeMutablePointer<Float>, _ count: Int) {
        if sa == 1 && sb == 1 {
            for i in 0..<count { o[i] = K.apply(a[i], b[i]) }
        } else if sa == 1 && sb == 0 {
            let s = b[0]
            for i in 0..<count { o[i] = K.apply(a[i], s) }
        } else if sa == 0 && sb == 1 {
            let s = a[0]
            for i in 0..<count { o[i] = K.apply(s, b[i]) }
        } else {
            for i in 0..<count { o[i] = K.apply(a[i * sa], b[i * sb]) }
        }
    }

    /// Broadcasting `K(a, b)` into a new contiguous tensor. Reads strided inputs in
    /// place (no copies of views).
    static func binaryForward<K: BinaryKernel>(_ k: K.Type, _ a: Tensor, _ b: Tensor) -> Tensor {
        let plan = BroadcastPlan(a, b)
        let out = Tensor(empty: plan.outShape)
        let n = out.count
        if n == 0 { return out }
        let pa = UnsafePointer(a.data), pb = UnsafePointer(b.data), po = out.data
        let r = plan.dims.count
        let inner = plan.dims[r - 1], isa = plan.stridesA[r - 1], isb = plan.stridesB[r - 1]
        if r == 1 {
            Parallel.forEach(n, grain: elementwiseGrain) { range in
                let lo = range.lowerBound
                binaryRun(k, pa + lo * isa, isa, pb + lo * isb, isb, po + lo, range.count)
            }
            return out
        }
        let dims = plan.dims, sA = plan.stridesA, sB = plan.stridesB
        Parallel.forEach(n / inner, grain: max(1, elementwiseGrain / inner)) { rows in
            // Multi-index of the first row over the outer dims, then step it.
            var idx = [Int](repeating: 0, count: r - 1)
            var rem = rows.lowerBound
            for d in stride(from: r - 2, through: 0, by: -1) { idx[d] = rem % dims[d]; rem /= dims[d] }
            for row in rows {
                var offA = 0, offB = 0
                for d in 0..<(r - 1) { offA += idx[d] * sA[d]; offB += idx[d] * sB[d] }
                binaryRun(k, pa + offA, isa, pb + offB, isb, po + row * inner, inner)
                var d = r - 2
                while d >= 0 { idx[d] += 1; if idx[d] < dims[d] { break }; idx[d] = 0; d -= 1 }
            }
        }
        return out
    }

    /// Applies `body(src, dst, count)` to contiguous tiles (at most `elementwiseTile`
    /// elements) of this tensor in parallel, writing a new tensor of the same shape
    /// (no autograd; callers record).
    func mapChunks(_ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
        let x = contiguous()
        let out = Tensor(empty: shape)
        let src = UnsafePointer(x.data), dst = out.data
        Parallel.forEach(count, grain: elementwiseGrain) { r in
            forEachTile(r) { i, m in body(src + i, dst + i, m) }
        }
        return out
    }

    /// `body(a, b, dst, count)` over contiguous tiles of two same-shape tensors.
    static func zipChunks(_ a: Tensor, _ b: Tensor,
                          _ body: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
        boundaryCheck(a.shape == b.shape, "zipChunks: \(a.shape) vs \(b.shape)")
        let ac = a.contiguous(), bc = b.contiguous()
        let out = Tensor(empty: a.shape)
        let pa = UnsafePointer(ac.data), pb = UnsafePointer(bc.data), po = out.data
        Parallel.forEach(a.count, grain: elementwiseGrain) { r in
            forEachTile(r) { i, m in body(pa + i, pb + i, po + i, m) }
        }
        return out
    }

    // MARK: operators

    /// Elementwise sum with broadcasting.
    public static func + (lhs: Tensor, rhs: Tensor) -> Tensor {
        let out = binaryForward(AddKernel.self, lhs, rhs)
        let sa = lhs.shape, sb = rhs.shape
        return record(out, [lhs, rhs], "add") { g, needs in
            [needs[0] ? g.sum(toShape: sa) : nil, needs[1] ? g.sum(toShape: sb) : nil]
        }
    }

    /// Elementwise difference with broadcasting.
    public static func - (lhs: Tensor, rhs: Tensor) -> Tensor {
        let out = binaryForward(SubKernel.self, lhs, rhs)
        let sa = lhs.shape, sb = rhs.shape
        return record(out, [lhs, rhs], "sub") { g, needs in
            [needs[0] ? g.sum(toShape: sa) : nil, needs[1] ? (-g).sum(toShape: sb) : nil]
        }
    }

    /// Elementwise product with broadcasting.
    public static func * (lhs: Tensor, rhs: Tensor) -> Tensor {
        let out = binaryForward(MulKernel.self, lhs, rhs)
        return record(out, [lhs, rhs], "mul") { g, needs in
            [needs[0] ? (g * rhs).sum(toShape: lhs.shape) : nil,
             needs[1] ? (g * lhs).sum(toShape: rhs.shape) : nil]
        }
    }

    /// Elementwise quotient with broadcasting.
    public static func / (lhs: Tensor, rhs: Tensor) -> Tensor {
        let out = binaryForward(DivKernel.self, lhs, rhs)
        return record(out, [lhs, rhs], "div") { g, needs in
            let ga = needs[0] || needs[1] ? g / rhs : nil
            // d(a/b)/db = -(a/b)/b, so gb = -(g/b)·(a/b) = -ga·a/b.
            return [needs[0] ? ga!.sum(toShape: lhs.shape) : nil,
                    needs[1] ? (-(ga! * lhs / rhs)).sum(toShape: rhs.shape) : nil]
        }
    }

    // With a Float: the scalar is a shape-[] tensor, which takes the stride-0 loop.
    public static func + (lhs: Tensor, rhs: Float) -> Tensor { lhs + Tensor.scalar(rhs) }
    public static func - (lhs: Tensor, rhs: Float) -> Tensor { lhs - Tensor.scalar(rhs) }
    public static func * (lhs: Tensor, rhs: Float) -> Tensor { lhs * Tensor.scalar(rhs) }
    public static func / (lhs: Tensor, rhs: Float) -> Tensor { lhs / Tensor.scalar(rhs) }
    public static func + (lhs: Float, rhs: Tensor) -> Tensor { Tensor.scalar(lhs) + rhs }
    public static func - (lhs: Float, rhs: Tensor) -> Tensor { Tensor.scalar(lhs) - rhs }
    public static func * (lhs: Float, rhs: Tensor) -> Tensor { Tensor.scalar(lhs) * rhs }
    public static func / (lhs: Float, rhs: Tensor) -> Tensor { Tensor.scalar(lhs) / rhs }

    /// Elementwise negation.
    public static prefix func - (x: Tensor) -> Tensor {
        let out = x.mapChunks { s, d, n in for i in 0..<n { d[i] = -s[i] } }
        return record(out, [x], "neg") { g, _ in [-g] }
    }

    // MARK: unary math

    /// Elementwise square root.
    public func sqrt() -> Tensor {
        let out = mapChunks { s, d, n in for i in 0..<n { d[i] = s[i].squareRoot() } }
        let y = out.detached()  // not `out`: the closure must not keep its own output alive
        return record(out, [self], "sqrt") { g, _ in
            [Tensor.zipChunks(g, y) { gp, yp, d, n in for i in 0..<n { d[i] = gp[i] * 0.5 / yp[i] } }]
        }
    }

    /// Elementwise square.
    public func square() -> Tensor {
        let out = mapChunks { s, d, n in for i in 0..<n { d[i] = s[i] * s[i] } }
        let x = self
        return record(out, [x], "square") { g, _ in
            [Tensor.zipChunks(g, x) { gp, xp, d, n in for i in 0..<n { d[i] = 2 * gp[i] * xp[i] } }]
        }
    }

    /// Elementwise exponential (vectorised `kb_exp`).
    public func exp() -> Tensor {
        let out = mapChunks { s, d, n in kb_exp(s, d, n) }
        let y = out.detached()
        return record(out, [self], "exp") { g, _ in [g * y] }
    }

    // MARK: in place

    /// `self += alpha · other` in place, outside autograd: for accumulating gradients
    /// and optimizer updates, never on a tensor a recorded op saved for backward.
    /// `other` must broadcast to `self`'s shape; `self` must be contiguous.
    public func addInPlace(_ other: Tensor, alpha: Float = 1) {
        boundaryCheck(isContiguous, "addInPlace needs a contiguous destination, shape \(shape) strides \(strides)")
        boundaryCheck(Tensor.broadcastShape(shape, other.shape) == shape, "addInPlace: \(other.shape) does not broadcast to \(shape)")
        let src = noGrad { other.shape == shape ? other.contiguous() : other.expand(shape).contiguous() }
        let d = data, s = UnsafePointer(src.data)
        Parallel.forEach(count, grain: elementwiseGrain) { r in
            for i in r { d[i] += alpha * s[i] }
        }
    }
}
