import CKernels
import Foundation
import KoalaTensor

/// Adam with blockwise 8-bit moments, equivalent to bitsandbytes' `Adam8bit` /
/// `AdamW8bit` as they run on CPU (bitsandbytes 0.50).
///
/// Parameters with at least `minQuantizedSize` (4096) elements keep both moments as
/// one byte per value: the first moment against the signed dynamic map, the second
/// against the unsigned one, in blocks of 256 values with one float absmax per block
/// (state memory: 2 bytes per parameter plus 8 bytes per 256). Smaller parameters keep
/// float32 moments, as bitsandbytes does.
///
/// 8-bit step (bitsandbytes' CPU kernel), per element:
/// dequantize `m`, `v`; `m = β1·m + (1-β1)·g`; `v = β2·v + (1-β2)·g²`;
/// `denom = sqrt(v)/sqrt(1-β2^t) + eps`; `p *= 1 - lr·wd` (when wd > 0);
/// `p += (-lr/(1-β1^t) · m) / denom`; then each block is requantized with a fresh absmax.
/// Float32 step (small parameters): the same moments, then
/// `p += (-lr·sqrt(1-β2^t)/(1-β1^t)) · m / (sqrt(v) + eps·sqrt(1-β2^t))`.
///
/// Weight decay is decoupled in both (bitsandbytes' Adam8bit and AdamW8bit differ only
/// in the default weight decay: 0 and 0.01). Quantized codes match bitsandbytes
/// exactly for the same gradients; parameters agree to about one float32 ulp per step
/// because PyTorch's CPU `sqrt` (MKL) is not always correctly rounded.
public final class Adam8bit: AdamFamily {
    public var learningRate: Double
    let hyperparameters: AdamHyperparameters
    /// Parameters with fewer elements keep float32 moments (bitsandbytes `min_8bit_size`).
    public let minQuantizedSize: Int
    public static let blockSize = BlockwiseQuantizer.optimizerBlockSize

    final class QuantizedMoments {
        var step = 0
        let count: Int
        var state1: [UInt8], state2: [UInt8]
        var absmax1: [Float], absmax2: [Float]
        init(count: Int) {
            self.count = count
            let blocks = (count + Adam8bit.blockSize - 1) / Adam8bit.blockSize
            state1 = [UInt8](repeating: 0, count: count)
            state2 = [UInt8](repeating: 0, count: count)
            absmax1 = [Float](repeating: 0, count: blocks)
            absmax2 = [Float](repeating: 0, count: blocks)
        }
    }

    enum Slot {
        case quantized(QuantizedMoments)
        case float(AdamMoments)
    }
    var slots: [Slot?] = []
    /// The vector kernel where the CPU has one; tests compare every kernel with `.swift`.
    var kernel = BlockwiseQuantizer.Kernel.best

    /// bitsandbytes' defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0
    /// (`Adam8bit`); pass 0.01 for `AdamW8bit`.
    public init(learningRate: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                weightDecay: Double = 0, minQuantizedSize: Int = 4096) {
        hyperparameters = AdamHyperparameters(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay)
        self.learningRate = learningRate
        self.minQuantizedSize = minQuantizedSize
    }

    /// bitsandbytes `AdamW8bit`: the same update with weight decay 0.01 by default.
    public static func adamW(learningRate: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                             weightDecay: Double = 0.01) -> Adam8bit {
        Adam8bit(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay)
    }

    /// Bytes held by the moment buffers (codes, absmax, float moments).
    public var stateBytes: Int {
        slots.reduce(0) { total, slot in
            switch slot {
            case .quantized(let q)?: total + 2 * q.count + 4 * (q.absmax1.count + q.absmax2.count)
            case .float(let f)?: total + 4 * (f.expAvg.count + f.expAvgSq.count)
            case nil: total
            }
        }
    }

    public func step(_ params: [Tensor]) {
        if slots.count < params.count { slots += [Slot?](repeating: nil, count: params.count - slots.count) }
        for (i, p) in params.enumerated() {
            guard let g = p.optimizerGrad() else { continue }
            if slots[i] == nil {
                slots[i] = p.count >= minQuantizedSize ? .quantized(QuantizedMoments(count: p.count)) : .float(AdamMoments(count: p.count))
            }
            switch slots[i]! {
            case .quantized(let q):
                precondition(q.count == p.count, "parameter \(i) changed size from \(q.count) to \(p.count)")
                q.step += 1
                updateQuantized(p, g, q)
            case .float(let f):
                precondition(f.expAvg.count == p.count, "parameter \(i) changed size from \(f.expAvg.count) to \(p.count)")
                f.step += 1
                updateFloat(p, g, f)
            }
        }
    }

    private func updateQuantized(_ p: Tensor, _ g: Tensor, _ q: QuantizedMoments) {
        let t = Double(q.step), lr = learningRate
        let b1 = Float(beta1), c1 = Float(1 - beta1), b2 = Float(beta2), c2 = Float(1 - beta2)
        let correction2 = Float((1 - Foundation.pow(beta2, t)).squareRoot())
        let negStep = Float(-lr / (1 - Foundation.pow(beta1, t)))
        let epsF = Float(eps), decay = Float(1 - lr * weightDecay), hasDecay = weightDecay > 0
        let n = q.count, bs = Self.blockSize, blocks = (n + bs - 1) / bs
        let pd = p.data, gd = g.data
        let quant1 = BlockwiseQuantizer.signed, quant2 = BlockwiseQuantizer.unsigned
        quant1.code.withUnsafeBufferPointer { code1B in
        quant2.code.withUnsafeBufferPointer { code2B in
        quant1.withTable { table1 in
        quant2.withTable { table2 in
        q.state1.withUnsafeMutableBufferPointer { s1B in
        q.state2.withUnsafeMutableBufferPointer { s2B in
        q.absmax1.withUnsafeMutableBufferPointer { a1B in
        q.absmax2.withUnsafeMutableBufferPointer { a2B in
            let code1 = code1B.baseAddress!, code2 = code2B.baseAddress!
            let s1 = s1B.baseAddress!, s2 = s2B.baseAddress!, absmax1 = a1B.baseAddress!, absmax2 = a2B.baseAddress!
            // Blocks are independent: each is dequantized, updated and requantized with
            // its own new absmax, so no full-size float copy of the moments is needed.
            if kernel != .swift {
                let h = kb_adam8bit_hparams(beta1: b1, one_minus_beta1: c1, beta2: b2, one_minus_beta2: c2,
                                            correction2: correction2, neg_step: negStep, eps: epsF, decay: decay,
                                            has_decay: hasDecay ? 1 : 0)
                let level = kernel.rawValue
                withUnsafePointer(to: h) { hp in
                    Parallel.forEach(blocks, grain: 8) { range in
                        kb_adam8bit_update(level, hp, n, range.lowerBound, range.upperBound, pd, gd, s1, s2, absmax1, absmax2,
                                           code1, code2, table1, table2)
                    }
                }
                return
            }
            Parallel.forEach(blocks, grain: 8) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * bs) { scratch in
                    let mBuf = scratch.baseAddress!, vBuf = mBuf + bs
                    for b in range {
                        let lo = b * bs, count = min(bs, n - lo)
                        let scale1 = absmax1[b], scale2 = absmax2[b]
                        for j in 0..<count {
                            let i = lo + j, gi = gd[i]
                            let m = (code1[Int(s1[i])] * scale1 * b1).addingProduct(c1, gi)
                            let v = (code2[Int(s2[i])] * scale2 * b2).addingProduct(c2 * gi, gi)
                            let denom = v.squareRoot() / correction2 + epsF
                            var pi = pd[i]
                            if hasDecay { pi = pi * decay }
                            pd[i] = pi + (negStep * m) / denom
                            mBuf[j] = m
                            vBuf[j] = v
                        }
                        absmax1[b] = BlockwiseQuantizer.quantizeBlock(mBuf, count: count, codes: s1 + lo, table: table1)
                        absmax2[b] = BlockwiseQuantizer.quantizeBlock(vBuf, count: count, codes: s2 + lo, table: table2)
                    }
                }
            }
        }}}}}}}}
    }

    private func updateFloat(_ p: Tensor, _ g: Tensor, _ f: AdamMoments) {
        let t = Double(f.step), lr = learningRate
        let b1 = Float(beta1), c1 = Float(1 - beta1), b2 = Float(beta2), c2 = Float(1 - beta2)
        let correction1 = 1 - Foundation.pow(beta1, t), correction2 = (1 - Foundation.pow(beta2, t)).squareRoot()
        let stepSize = Float(-lr * correction2 / correction1)
        let epsScaled = Float(eps * correction2)
        let decay = Float(1 - lr * weightDecay), hasDecay = weightDecay > 0
        let pd = p.data, gd = g.data, n = p.count
        f.withBuffers { m, v in
            Parallel.forEach(n, grain: 16384) { range in
                for i in range {
                    let gi = gd[i]
                    let mi = (m[i] * b1).addingProduct(c1, gi)
                    let vi = (v[i] * b2).addingProduct(c2 * gi, gi)
                    m[i] = mi
                    v[i] = vi
                    var pi = pd[i]
                    if hasDecay { pi = pi * decay }
                    pd[i] = pi.addingProduct(stepSize, mi / (vi.squareRoot() + epsScaled))
                }
            }
        }
    }

    // MARK: state

    static let kindName = "adam8bit"

    public func stateDict() -> OptimizerState {
        var st = OptimizerState()
        st.metadata = stateMetadata(kind: Self.kindName, parameterCount: slots.count)
        st.metadata["min_8bit_size"] = "\(minQuantizedSize)"
        st.metadata["block_size"] = "\(Self.blockSize)"
        for (i, slot) in slots.enumerated() {
            switch slot {
            case .quantized(let q)?:
                st.metadata["param.\(i).step"] = "\(q.step)"
                st.metadata["param.\(i).count"] = "\(q.count)"
                st.metadata["param.\(i).quantized"] = "true"
                st.tensors["param.\(i).state1"] = Self.pack(q.state1)
                st.tensors["param.\(i).state2"] = Self.pack(q.state2)
                st.tensors["param.\(i).absmax1"] = .copying(q.absmax1)
                st.tensors["param.\(i).absmax2"] = .copying(q.absmax2)
            case .float(let f)?:
                f.save(into: &st, index: i)
                st.metadata["param.\(i).count"] = "\(f.expAvg.count)"
                st.metadata["param.\(i).quantized"] = "false"
            case nil:
                break
            }
        }
        return st
    }

    public func load(stateDict st: OptimizerState) throws {
        let count = try st.checkKind(Self.kindName)
        guard try st.int("block_size") == Self.blockSize else {
            throw OptimizerStateError("optimizer state uses blocks of \(st.metadata["block_size"] ?? "?") values; this build uses \(Self.blockSize)")
        }
        var loaded = [Slot?](repeating: nil, count: count)
        for i in 0..<count {
            guard st.metadata["param.\(i).step"] != nil else { continue }
            let n = try st.int("param.\(i).count"), step = try st.int("param.\(i).step")
            if try st.string("param.\(i).quantized") == "true" {
                let q = QuantizedMoments(count: n)
                q.step = step
                q.state1 = try Self.unpack(st.tensor("param.\(i).state1", count: (n + 2) / 3), count: n)
                q.state2 = try Self.unpack(st.tensor("param.\(i).state2", count: (n + 2) / 3), count: n)
                q.absmax1 = try st.tensor("param.\(i).absmax1", count: q.absmax1.count).toArray()
                q.absmax2 = try st.tensor("param.\(i).absmax2", count: q.absmax2.count).toArray()
                loaded[i] = .quantized(q)
            } else {
                loaded[i] = .float(try AdamMoments.load(st, index: i, count: n))
            }
        }
        learningRate = try st.double("lr")
        slots = loaded
    }

    /// Three codes per float32 (`c0 + 256·c1 + 65536·c2` < 2^24 is exact), so a saved
    /// 8-bit state takes 1.33 bytes per value on disk.
    static func pack(_ codes: [UInt8]) -> Tensor {
        let out = Tensor(empty: [(codes.count + 2) / 3])
        let d = out.data
        for k in 0..<out.count {
            var v = 0
            for j in 0..<3 where 3 * k + j < codes.count { v += Int(codes[3 * k + j]) << (8 * j) }
            d[k] = Float(v)
        }
        return out
    }

    static func unpack(_ t: Tensor, count: Int) throws -> [UInt8] {
        var codes = [UInt8](repeating: 0, count: count)
        let d = t.data
        for k in 0..<t.count {
            let f = d[k]
            guard f >= 0, f < 16_777_216, f == f.rounded() else {
                throw OptimizerStateError("optimizer state holds \(f) where packed 8-bit codes were expected; the file is corrupt")
            }
            let v = Int(f)
            for j in 0..<3 where 3 * k + j < count { codes[3 * k + j] = UInt8((v >> (8 * j)) & 255) }
        }
        return codes
    }
}
