import Foundation

/// A float32 n-dimensional array: a view (shape, strides, offset) onto a `Storage`.
///
/// Tensors are classes so that autograd can hang a gradient (`grad`) and the op that
/// produced them (`gradFn`) on them, as PyTorch does. Ops produce contiguous results
/// unless they are views (`reshape`, `permute`, `transposed`, `slice`, `expand`).
public final class Tensor: @unchecked Sendable, CustomStringConvertible {
    public let storage: Storage
    public let shape: [Int]
    public let strides: [Int]
    public let offset: Int

    /// Whether gradients flow to this tensor. Set it on leaves (parameters, inputs);
    /// op outputs get it from their inputs.
    public var requiresGrad: Bool
    /// Accumulated gradient of a leaf after `backward()`.
    public var grad: Tensor?
    /// The recorded op that produced this tensor (nil for leaves and no-grad results).
    public internal(set) var gradFn: GradNode?

    public init(storage: Storage, shape: [Int], strides: [Int]? = nil, offset: Int = 0, requiresGrad: Bool = false) {
        self.storage = storage
        self.shape = shape
        self.strides = strides ?? Tensor.contiguousStrides(shape)
        self.offset = offset
        self.requiresGrad = requiresGrad
    }

    /// Uninitialised contiguous tensor (the caller writes every element).
    public convenience init(empty shape: [Int]) {
        self.init(storage: Storage(count: shape.reduce(1, *)), shape: shape)
    }

    public convenience init(shape: [Int], values: [Float], requiresGrad: Bool = false) {
        let n = shape.reduce(1, *)
        boundaryCheck(values.count == n, "Tensor(shape: \(shape)) needs \(n) values, got \(values.count)")
        self.init(empty: shape)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: n) }
        self.requiresGrad = requiresGrad
    }

    public static func zeros(_ shape: [Int]) -> Tensor {
        Tensor(storage: Storage(zeros: shape.reduce(1, *)), shape: shape)
    }

    public static func full(_ shape: [Int], _ value: Float) -> Tensor {
        let t = Tensor(empty: shape)
        t.data.update(repeating: value, count: t.count)
        return t
    }

    public static func ones(_ shape: [Int]) -> Tensor { full(shape, 1) }

    public static func scalar(_ value: Float) -> Tensor { full([], value) }

    // MARK: geometry

    public var rank: Int { shape.count }
    public var count: Int { shape.reduce(1, *) }
    public func size(_ dim: Int) -> Int { shape[normalize(dim)] }

    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = s
            s *= shape[i]
        }
        return strides
    }

    public var isContiguous: Bool {
        var expected = 1
        for i in stride(from: rank - 1, through: 0, by: -1) where shape[i] != 1 {
            if strides[i] != expected { return false }
            expected *= shape[i]
        }
        return true
    }

    /// Pointer to the first element. Index it linearly only when `isContiguous`.
    public var data: UnsafeMutablePointer<Float> {
        // A weight held in bf16 has no float elements; only the bf16-aware GEMM ops
        // (linear, conv2d: Precision.swift) may read it, through `storage.bf16`.
        if _slowPath(storage.bf16 != nil) { Tensor.heldInBF16(shape) }
        return storage.pointer + offset
    }

    @inline(never)
    static func heldInBF16(_ shape: [Int]) -> Never {
        fatalError("a \(shape) tensor is held in bf16 (a frozen weight in the bf16 precision mode) and was read as float32 by an op that does not take bf16 weights; use the fp32 precision mode or give that op a bf16 path (Sources/KoalaTensor/BF16Ops.swift)")
    }

    func normalize(_ dim: Int) -> Int {
        let d = dim < 0 ? dim + rank : dim
        boundaryCheck(d >= 0 && d < rank, "dimension \(dim) out of range for shape \(shape)")
        return d
    }

    // MARK: element access (tests and small host-side code; not for hot loops)

    public func toArray() -> [Float] {
        let c = contiguous()
        return Array(UnsafeBufferPointer(start: c.data, count: c.count))
    }

    public subscript(_ index: Int...) -> Float {
        get { data[linearOffset(index)] }
        set { data[linearOffset(index)] = newValue }
    }

    private func linearOffset(_ index: [Int]) -> Int {
        boundaryCheck(index.count == rank, "index \(index) does not match shape \(shape)")
        var o = 0
        for i in 0..<rank {
            boundaryCheck(index[i] >= 0 && index[i] < shape[i], "index \(index) out of range for shape \(shape)")
            o += index[i] * strides[i]
        }
        return o
    }

    /// The single value of a one-element tensor.
    public var item: Float {
        boundaryCheck(count == 1, "item needs a one-element tensor, shape is \(shape)")
        return data[0]
    }

    public var description: String {
        let values = toArray()
        let shown = values.prefix(8).map { String(format: "%.5g", $0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(shown)\(values.count > 8 ? ", …" : "")])"
    }

    // MARK: copies

    /// A contiguous tensor with the same values: `self` when already contiguous.
    public func contiguous() -> Tensor {
        if isContiguous { return self }
        let out = Tensor(empty: shape)
        copyStrided(into: out.data)
        return record(out, [self], "contiguous") { g, _ in [g] }
    }

    /// A new contiguous tensor holding a copy of the values, detached from autograd.
    public func copy() -> Tensor {
        let out = Tensor(empty: shape)
        if isContiguous { out.data.update(from: data, count: count) } else { copyStrided(into: out.data) }
        return out
    }

    /// The same values without autograd history (shares storage).
    public func detached() -> Tensor {
        Tensor(storage: storage, shape: shape, strides: strides, offset: offset)
    }

    /// Writes the elements in row-major order into `dst`.
    func copyStrided(into dst: UnsafeMutablePointer<Float>) {
        if rank == 0 { dst[0] = data[0]; return }
        let n = count
        if n == 0 { return }
        // Iterate the innermost dimension in a tight loop; outer indices by counter.
        let inner = shape[rank - 1], innerStride = strides[rank - 1]
        let outer = n / inner
        let src = data
        let shp = shape, str = strides, r = rank
        Parallel.forEach(outer, grain: max(1, 32768 / max(inner, 1))) { range in
            var idx = [Int](repeating: 0, count: r)
            var rem = range.lowerBound
            for d in stride(from: r - 2, through: 0, by: -1) { idx[d] = rem % shp[d]; rem /= shp[d] }
            for o in range {
                var base = 0
                for d in 0..<(r - 1) { base += idx[d] * str[d] }
                let out = dst + o * inner
                if innerStride == 1 {
                    out.update(from: src + base, count: inner)
                } else {
                    for i in 0..<inner { out[i] = src[base + i * innerStride] }
                }
                var d = r - 2
                while d >= 0 { idx[d] += 1; if idx[d] < shp[d] { break }; idx[d] = 0; d -= 1 }
            }
        }
    }
}
