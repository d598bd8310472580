import Foundation
import CKernels

/// Which GELU formula to use, as `torch.nn.functional.gelu(approximate:)`.
public enum GELUApproximation: Sendable {
    /// Exact: `x · Φ(x) = 0.5 · x · (1 + erf(x / √2))`.
    case none
    /// `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`.
    case tanh
}

private let invSqrt2: Float = 0.70710678118654752
private let invSqrt2Pi: Float = 0.39894228040143268
private let sqrt2OverPi: Float = 0.79788456080286536
private let geluTanhCoeff: Float = 0.044715

/// GELU of `n` values into `y` (may alias nothing else).
@inline(__always)
private func geluForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ approx: GELUApproximation) {
    switch approx {
    case .none:
        for i in 0..<n { y[i] = x[i] * invSqrt2 }
        kb_erf(y, y, n)
        for i in 0..<n { y[i] = 0.5 * x[i] * (1 + y[i]) }
    case .tanh:
        for i in 0..<n { let v = x[i]; y[i] = sqrt2OverPi * (v + geluTanhCoeff * v * v * v) }
        kb_tanh(y, y, n)
        for i in 0..<n { y[i] = 0.5 * x[i] * (1 + y[i]) }
    }
}

/// GELU value into `value` and its derivative into `deriv` (distinct buffers).
@inline(__always)
private func geluWithDerivative(_ x: UnsafePointer<Float>, _ value: UnsafeMutablePointer<Float>,
                                _ deriv: UnsafeMutablePointer<Float>, _ n: Int, _ approx: GELUApproximation) {
    switch approx {
    case .none:
        // d/dx x·Φ(x) = Φ(x) + x·φ(x)
        for i in 0..<n { let v = x[i]; value[i] = v * invSqrt2; deriv[i] = -0.5 * v * v }
        kb_erf(value, value, n)
        kb_exp(deriv, deriv, n)
        for i in 0..<n {
            let v = x[i], cdf = 0.5 * (1 + value[i])
            value[i] = v * cdf
            deriv[i] = cdf + v * invSqrt2Pi * deriv[i]
        }
    case .tanh:
        for i in 0..<n { let v = x[i]; value[i] = sqrt2OverPi * (v + geluTanhCoeff * v * v * v) }
        kb_tanh(value, value, n)
        for i in 0..<n {
            let v = x[i], t = value[i]
            value[i] = 0.5 * v * (1 + t)
            deriv[i] = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * sqrt2OverPi * (1 + 3 * geluTanhCoeff * v * v)
        }
    }
}

extension Tensor {
    /// `1 / (1 + exp(-x))`.
    public func sigmoid() -> Tensor {
        let out = mapChunks { s, d, n in kb_sigmoid(s, d, n) }
        let y = out.detached()
        return record(out, [self], "sigmoid") { g, _ in
            [Tensor.zipChunks(g, y) { gp, yp, d, n in for i in 0..<n { d[i] = gp[i] * yp[i] * (1 - yp[i]) } }]
        }
    }

    /// `x · sigmoid(x)` (SiLU / swish), as `torch.nn.functional.silu`.
    public func silu() -> Tensor { sigmoidGated(1, "silu") }

    /// `x · sigmoid(1.702 · x)`, the GELU approximation of OpenAI CLIP (ViT-L/14's
    /// `quick_gelu`).
    public func quickGELU() -> Tensor { sigmoidGated(1.702, "quick_gelu") }

    /// `x · sigmoid(k·x)`; derivative `s + k·x·s·(1 - s)` with `s = sigmoid(k·x)`.
    private func sigmoidGated(_ k: Float, _ name: String) -> Tensor {
        let out = mapChunks { s, d, n in
            for i in 0..<n { d[i] = k * s[i] }
            kb_sigmoid(d, d, n)
            for i in 0..<n { d[i] *= s[i] }
        }
        let x = self
        return record(out, [x], name) { g, _ in
            [Tensor.zipChunks(g, x) { gp, xp, d, n in
                for i in 0..<n { d[i] = k * xp[i] }
                kb_sigmoid(d, d, n)
                for i in 0..<n { let s = d[i]; d[i] = gp[i] * (s + k * xp[i] * s * (1 - s)) }
            }]
        }
    }

    /// Gaussian error linear unit, as `torch.nn.functional.gelu(x, approximate:)`.
    public func gelu(approximate: GELUApproximation = .none) -> Tensor {
        let out = mapChunks { s, d, n in geluForward(s, d, n, approximate) }
        let x = self
        return record(out, [x], "gelu") { g, _ in
            [Tensor.zipChunks(g, x) { gp, xp, d, n in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { scratch in
                    geluWithDerivative(xp, scratch.baseAddress!, d, n, approximate)
                }
                for i in 0..<n { d[i] *= gp[i] }
            }]
        }
    }

    /// Gated GELU as diffusers' `GEGLU` after its projection: splits the last dim into
    /// halves `(hidden, gate)` and returns `hidden · gelu(gate)`. Last dim `2H` -> `H`.
    public func geglu(approximate: GELUApproximation = .none) -> Tensor {
        let two = shape[rank - 1]
        boundaryCheck(rank >= 1 && two % 2 == 0, "geglu needs an even last dimension, shape is \(shape)")
        let h = two / 2, rows = count / max(two, 1)
        let x = contiguous()
        let out = Tensor(empty: Array(shape.dropLast()) + [h])
        let xp = UnsafePointer(x.data), op = out.data
        Parallel.forEach(rows, grain: max(1, elementwiseGrain / max(h, 1))) { r in
            for row in r {
                let hidden = xp + row * two, gate = hidden + h, o = op + row * h
                geluForward(gate, o, h, approximate)
                for i in 0..<h { o[i] *= hidden[i] }
            }
        }
        return record(out, [x], "geglu") { g, _ in
            let gc = g.contiguous()
            let gx = Tensor(empty: x.shape)
            let gp = UnsafePointer(gc.data), dp = gx.data
            Parallel.forEach(rows, grain: max(1, elementwiseGrain / max(h, 1))) { r in
                for row in r {
                    let hidden = xp + row * two, gate = hidden + h, go = gp + row * h
                    let dHidden = dp + row * two, dGate = dHidden + h
                    // dHidden holds gelu(gate), dGate gelu'(gate); then scale in place.
                    geluWithDerivative(gate, dHidden, dGate, h, approximate)
                    for i in 0..<h {
                        dGate[i] *= go[i] * hidden[i]
                        dHidden[i] *= go[i]
                    }
                }
            }
            return [gx]
        }
    }
}
