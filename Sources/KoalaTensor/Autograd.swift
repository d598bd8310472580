import Foundation

/// Whether ops record themselves for backward. The graph is built by one thread at a
/// time (ops parallelise internally), so a plain global is enough.
public enum GradMode {
    nonisolated(unsafe) public static var isEnabled = true
}

/// Runs `body` without recording ops (inference, optimizer updates).
@discardableResult
public func noGrad<T>(_ body: () throws -> T) rethrows -> T { try withGradMode(false, body) }

/// Runs `body` with recording on, even inside `noGrad` (used by checkpointing).
@discardableResult
public func withGrad<T>(_ body: () throws -> T) rethrows -> T { try withGradMode(true, body) }

private func withGradMode<T>(_ enabled: Bool, _ body: () throws -> T) rethrows -> T {
    let saved = GradMode.isEnabled
    GradMode.isEnabled = enabled
    defer { GradMode.isEnabled = saved }
    return try body()
}

/// One recorded op: its inputs and a closure mapping the output's gradient to the
/// inputs' gradients. The closure owns whatever the op saved for backward; it is
/// dropped as soon as it has run, which frees activations during `backward()`.
public final class GradNode: @unchecked Sendable {
    public let name: String
    var inputs: [Tensor]
    var backwardFn: ((Tensor, [Bool]) -> [Tensor?])?

    init(name: String, inputs: [Tensor], backward: @escaping (Tensor, [Bool]) -> [Tensor?]) {
        self.name = name
        self.inputs = inputs
        self.backwardFn = backward
    }
}

/// Records `out = op(inputs)` for autograd when recording is on and an input needs a
/// gradient. `backward(gradOut, needsGrad)` returns one gradient per input (nil where
/// `needsGrad[i]` is false or the input gets none), each shaped like its input.
@discardableResult
public func record(_ out: Tensor, _ inputs: [Tensor], _ name: String,
                   force: Bool = false,
                   _ backward: @escaping (Tensor, [Bool]) -> [Tensor?]) -> Tensor {
    guard GradMode.isEnabled, force || inputs.contains(where: { $0.requiresGrad }) else { return out }
    out.requiresGrad = true
    out.gradFn = GradNode(name: name, inputs: inputs, backward: backward)
    return out
}

extension Tensor {
    /// Backpropagates from this tensor. `gradient` defaults to ones (a scalar loss).
    /// Leaves that require grad accumulate into `.grad`; the graph is consumed.
    public func backward(_ gradient: Tensor? = nil) {
        let seed = gradient ?? Tensor.full(shape, 1)
        boundaryCheck(seed.shape == shape, "backward: gradient shape \(seed.shape) != tensor shape \(shape)")
        guard let root = gradFn else {
            if requiresGrad { accumulateLeafGrad(seed) }
            return
        }
        noGrad {
            let order = Tensor.topologicalOrder(root)
            // Gradients waiting for their producer; `owned` ones may be summed into in place.
            var pending: [ObjectIdentifier: (grad: Tensor, owned: Bool)] = [ObjectIdentifier(root): (seed, false)]
            for node in order.reversed() {
                guard let g = pending.removeValue(forKey: ObjectIdentifier(node))?.grad, let fn = node.backwardFn else { continue }
                let inputs = node.inputs
                let needs = inputs.map { $0.requiresGrad }
                let grads = fn(g, needs)
                node.backwardFn = nil
                node.inputs = []
                boundaryCheck(grads.count == inputs.count, "\(node.name) backward returned \(grads.count) grads for \(inputs.count) inputs")
                for (input, grad) in zip(inputs, grads) {
                    guard let grad, input.requiresGrad else { continue }
                    boundaryCheck(grad.shape == input.shape, "\(node.name) backward: grad shape \(grad.shape) != input shape \(input.shape)")
                    let owned = Tensor.isFresh(grad, among: grads, incoming: g, inputs: inputs)
                    if let producer = input.gradFn {
                        let key = ObjectIdentifier(producer)
                        if let existing = pending[key] {
                            pending[key] = (Tensor.sumGrads(existing.grad, grad, inPlace: existing.owned), true)
                        } else {
                            pending[key] = (grad, owned)
                        }
                    } else {
                        input.accumulateLeafGrad(grad, owned: owned)
                    }
                }
            }
        }
        gradFn = nil
    }

    /// `owned`: nothing else holds `g`'s buffer, so it can become `.grad` as it is.
    /// Otherwise it is copied, since later steps add into `.grad` in place.
    func accumulateLeafGrad(_ g: Tensor, owned: Bool = false) {
        if let existing = grad {
            let n = count, dst = existing.data
            let src = g.contiguous()
            let s = src.data
            Parallel.forEach(n, grain: 1 << 15) { r in for i in r { dst[i] += s[i] } }
        } else {
            grad = owned ? g : g.copy()
        }
    }

    /// Whether a gradient returned by a backward closure is a buffer of its own: whole
    /// and contiguous, not the incoming gradient, not one of the op's inputs, and not
    /// shared with another gradient the closure returned. Leaves adopt such gradients
    /// instead of copying them (that copy was ~4 s of a KOALA-700M full step: 3 GB of
    /// weight gradients into fresh pages every step) and pending sums add into them.
    static func isFresh(_ grad: Tensor, among grads: [Tensor?], incoming: Tensor, inputs: [Tensor]) -> Bool {
        let s = grad.storage
        return grad.isContiguous && grad.offset == 0 && grad.count == s.count && s !== incoming.storage
            && !inputs.contains { $0.storage === s } && grads.filter { $0?.storage === s }.count == 1
    }

    /// a + b, written into `a` when `inPlace` (a buffer the engine owns).
    static func sumGrads(_ a: Tensor, _ b: Tensor, inPlace: Bool) -> Tensor {
        let out = inPlace ? a : a.copy()
        let bc = b.contiguous()
        let d = out.data, s = bc.data
        Parallel.forEach(out.count, grain: 1 << 15) { r in for i in r { d[i] += s[i] } }
        return out
    }

    /// Post-order over the graph below `root`, without recursion (graphs of large
    /// U-Nets are thousands of ops deep).
    static func topologicalOrder(_ root: GradNode) -> [GradNode] {
        var order: [GradNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(GradNode, Int)] = [(root, 0)]
        visited.insert(ObjectIdentifier(root))
        while let (node, next) = stack.popLast() {
            if next < node.inputs.count {
                stack.append((node, next + 1))
                if let child = node.inputs[next].gradFn, visited.insert(ObjectIdentifier(child)).inserted {
                    stack.append((child, 0))
                }
            } else {
                order.append(node)
            }
        }
        return order
    }
}

/// Gradient checkpointing: runs `body` without keeping its activations and runs it
/// again during backward to get them. Parameters used inside `body` receive their
/// gradients during that second run. `body` must be deterministic (pass dropout a
/// generator snapshot if it draws random numbers).
public func checkpoint(_ inputs: [Tensor], _ body: @escaping ([Tensor]) -> Tensor) -> Tensor {
    guard GradMode.isEnabled else { return body(inputs) }
    let out = noGrad { body(inputs) }
    return record(out, inputs, "checkpoint", force: true) { g, needs in
        let replay = zip(inputs, needs).map { t, need -> Tensor in
            let d = t.detached()
            d.requiresGrad = need
            return d
        }
        let recomputed = withGrad { body(replay) }
        if recomputed.requiresGrad { recomputed.backward(g) }
        return replay.map { $0.grad }
    }
}
