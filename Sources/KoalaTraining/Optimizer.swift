import Foundation
import KoalaTensor

/// A first-order optimizer over a fixed, ordered list of parameters.
///
/// As in PyTorch, state is kept per parameter position: pass the same tensors in the
/// same order to every `step`. Parameters whose `grad` is nil are skipped (their state,
/// if any, is left as it is). Parameters are updated in place and must be contiguous.
public protocol Optimizer: AnyObject {
    /// The rate of the next step; a schedule sets it before each step.
    var learningRate: Double { get set }
    /// Updates every parameter that has a gradient, using its `.grad`.
    func step(_ params: [Tensor])
    /// Everything needed to continue exactly where this optimizer is: hyperparameters,
    /// per-parameter step counts and moment buffers.
    func stateDict() -> OptimizerState
    /// Restores a state from `stateDict()` of the same kind of optimizer.
    func load(stateDict: OptimizerState) throws
}

extension Optimizer {
    /// Drops the gradients (PyTorch's `zero_grad(set_to_none=True)`).
    public func zeroGrad(_ params: [Tensor]) {
        for p in params { p.grad = nil }
    }

    /// One training step's update from the accumulated gradients, as the training scripts
    /// order it: clip their total norm to `maxGradNorm` (0: no clipping), step at `rate`,
    /// drop the gradients. DreamBooth and distillation runs both step through here.
    public func step(_ params: [Tensor], rate: Double, maxGradNorm: Double) {
        if maxGradNorm > 0 { _ = GradientClipping.clipGradNorm(params, maxNorm: maxGradNorm) }
        learningRate = rate
        step(params)
        zeroGrad(params)
    }
}

/// The optimizers a recipe can name.
public enum OptimizerKind: String, CaseIterable, Sendable {
    /// bitsandbytes `Adam8bit` (weight decay default 0).
    case adam8bit
    /// bitsandbytes `AdamW8bit` (weight decay default 0.01).
    case adamw8bit
    /// `torch.optim.AdamW` in float32 (weight decay default 0.01).
    case adamw

    /// Creates the optimizer with its reference library's defaults for anything not given.
    public func make(learningRate: Double, betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8,
                     weightDecay: Double? = nil) -> any Optimizer {
        switch self {
        case .adam8bit:
            Adam8bit(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay ?? 0)
        case .adamw8bit:
            Adam8bit(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay ?? 0.01)
        case .adamw:
            AdamW(learningRate: learningRate, betas: betas, eps: eps, weightDecay: weightDecay ?? 0.01)
        }
    }
}

/// A serialisable optimizer state: named float32 tensors plus string metadata, the shape
/// of a safetensors file. Doubles are stored in metadata with Swift's round-trip
/// formatting, so saving and loading restores them exactly.
public struct OptimizerState: Sendable {
    public var tensors: [String: Tensor]
    public var metadata: [String: String]

    public init(tensors: [String: Tensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Writes the state as a safetensors file (float32, atomic replace).
    public func save(to path: String) throws {
        try SafeTensors.write(tensors, to: path, dtype: .F32, metadata: metadata)
    }

    /// Reads a state written by `save(to:)`.
    public static func load(from path: String) throws -> OptimizerState {
        let file = try SafeTensorsFile(path: path)
        var tensors: [String: Tensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        return OptimizerState(tensors: tensors, metadata: file.metadata)
    }

    // MARK: helpers for optimizers

    func string(_ key: String) throws -> String {
        guard let v = metadata[key] else {
            throw OptimizerStateError("optimizer state lacks '\(key)'; it was not written by this version of KoalaBooth or is corrupt")
        }
        return v
    }

    func double(_ key: String) throws -> Double {
        guard let v = Double(try string(key)) else { throw OptimizerStateError("optimizer state '\(key)' is not a number") }
        return v
    }

    func int(_ key: String) throws -> Int {
        guard let v = Int(try string(key)) else { throw OptimizerStateError("optimizer state '\(key)' is not an integer") }
        return v
    }

    func tensor(_ key: String, count: Int) throws -> Tensor {
        guard let t = tensors[key] else { throw OptimizerStateError("optimizer state lacks tensor '\(key)'") }
        guard t.count == count else {
            throw OptimizerStateError("optimizer state tensor '\(key)' has \(t.count) values, expected \(count); the state belongs to a different model or parameter list")
        }
        return t.contiguous()
    }

    /// Checks the optimizer kind and returns the number of parameter slots.
    func checkKind(_ kind: String) throws -> Int {
        let saved = try string("optimizer")
        guard saved == kind else {
            throw OptimizerStateError("optimizer state is for '\(saved)', not '\(kind)'; resume with the optimizer the run was started with")
        }
        return try int("param_count")
    }
}

/// A state that cannot be loaded (wrong optimizer, wrong parameters, missing entries).
public struct OptimizerStateError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension Tensor {
    /// The gradient as a contiguous tensor of the parameter's shape (for optimizers).
    func optimizerGrad() -> Tensor? {
        guard let g = grad else { return nil }
        precondition(g.count == count, "gradient has \(g.count) values for a parameter of shape \(shape)")
        precondition(isContiguous, "optimizers update parameters in place; parameter of shape \(shape) is not contiguous")
        return g.contiguous()
    }

    /// A float32 tensor holding a copy of `values`.
    static func copying(_ values: [Float]) -> Tensor {
        Tensor(shape: [values.count], values: values)
    }
}
