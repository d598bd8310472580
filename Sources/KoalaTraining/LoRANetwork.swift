import Foundation
import KoalaModels
import KoalaTensor

/// One trainable low-rank update attached to a frozen `Linear` or `Conv2d`:
/// `y = base(x) + scale · up(down(dropout(x)))`, as PEFT's `lora.Linear` / `lora.Conv2d`.
public final class LoRAAdapter {
    /// How the adapter applies its weights.
    public enum Kind: Equatable, Sendable {
        case linear
        /// The down projection uses the base convolution's kernel, stride and padding;
        /// the up projection is 1x1.
        case conv(stride: Int, padding: Int)
    }

    /// The adapted layer's module path inside its model (`down_blocks.1.attentions.0.…to_q`).
    public let path: String
    public let kind: Kind
    /// A (`lora_A` / `lora_down`): [r, in] or [r, in, k, k].
    public let down: Tensor
    /// B (`lora_B` / `lora_up`): [out, r] or [out, r, 1, 1].
    public let up: Tensor
    public let scale: Float
    public let dropout: Float
    /// Dropout is applied only while training.
    public var training = true
    /// Seed of the dropout mask of the next calls; set per forward pass by `LoRANetwork.reseedDropout`.
    var dropoutSeed: UInt64 = 0

    /// PEFT's initialisation: A kaiming-uniform (a = √5, i.e. U(±1/√fan_in)), B zero,
    /// so the adapted model starts equal to the base model.
    init(path: String, kind: Kind, inFeatures: Int, outFeatures: Int, kernelSize: Int,
         config: LoRAConfig, generator: inout RandomGenerator) {
        self.path = path
        self.kind = kind
        let r = config.rank
        let fanIn = inFeatures * kernelSize * kernelSize
        let bound = 1 / Float(fanIn).squareRoot()
        let downShape = kind == .linear ? [r, inFeatures] : [r, inFeatures, kernelSize, kernelSize]
        down = Tensor.rand(downShape, generator: &generator) * (2 * bound) - bound
        down.requiresGrad = true
        up = Tensor.zeros(kind == .linear ? [outFeatures, r] : [outFeatures, r, 1, 1])
        up.requiresGrad = true
        scale = config.scale
        dropout = config.dropout
    }

    /// The update `scale · up(down(dropout(x)))` for the layer input `x`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        if training && dropout > 0 {
            var g = RandomGenerator(seed: dropoutSeed)
            h = x.dropout(p: dropout, training: true, generator: &g)
        }
        // The scale goes on the rank-r intermediate, not the full-width output, and is
        // skipped at 1 (alpha = rank, the default): a multiply over every adapted
        // layer's output cost ~4% of a KOALA-700M LoRA step.
        switch kind {
        case .linear:
            let z = h.linear(down)
            return (scale == 1 ? z : z * scale).linear(up)
        case .conv(let stride, let padding):
            let z = h.conv2d(down, stride: stride, padding: padding)
            return (scale == 1 ? z : z * scale).conv2d(up)
        }
    }

    /// `scale · up · down` in the base weight's shape (for merging into the base layer).
    public func delta() -> Tensor {
        noGrad {
            let r = down.shape[0]
            let d = up.reshape([up.shape[0], r]).matmul(down.reshape([r, down.count / r])) * scale
            return d.reshape(kind == .linear ? [up.shape[0], down.shape[1]] : [up.shape[0]] + Array(down.shape.dropFirst()))
        }
    }
}

/// The LoRA adapters of one model component (`unet`, `text_encoder`, `text_encoder_2`).
///
/// Attaching freezes the model's own parameters and hooks each target layer through
/// its `adapter` property, so the model code runs unchanged.
public final class LoRANetwork {
    /// The diffusers component name used as key prefix on export.
    public let component: String
    public let config: LoRAConfig
    /// In model order.
    public let adapters: [LoRAAdapter]
    private let layers: [AnyObject]

    /// Attaches fresh adapters (A seeded from `seed`, B zero) to every target layer of
    /// `model`. Throws when no layer matches or a target hits a layer kind LoRA does not
    /// support here.
    public init(attachingTo model: any Module, component: String, config: LoRAConfig, seed: UInt64) throws {
        try config.validate()
        self.component = component
        self.config = config
        var generator = RandomGenerator(seed: seed)
        var adapters: [LoRAAdapter] = []
        var layers: [AnyObject] = []
        for (path, module) in namedModules(model) where config.matches(path) {
            if let l = module as? Linear {
                precondition(l.adapter == nil, "LoRANetwork: \(path) already has an adapter attached")
                adapters.append(LoRAAdapter(path: path, kind: .linear, inFeatures: l.weight.shape[1], outFeatures: l.weight.shape[0],
                                            kernelSize: 1, config: config, generator: &generator))
                layers.append(l)
            } else if let c = module as? Conv2d {
                precondition(c.adapter == nil, "LoRANetwork: \(path) already has an adapter attached")
                adapters.append(LoRAAdapter(path: path, kind: .conv(stride: c.stride, padding: c.padding),
                                            inFeatures: c.weight.shape[1], outFeatures: c.weight.shape[0],
                                            kernelSize: c.weight.shape[2], config: config, generator: &generator))
                layers.append(c)
            }
        }
        guard !adapters.isEmpty else {
            throw LoRAError("no layer of \(component) matches the LoRA targets \(config.targetModules); "
                + "valid targets include \(component.hasPrefix("text_encoder") ? LoRAConfig.textEncoderTargets : LoRAConfig.attentionTargets)")
        }
        self.adapters = adapters
        self.layers = layers
        model.setRequiresGrad(false)
        for (adapter, layer) in zip(adapters, layers) {
            if let l = layer as? Linear { l.adapter = { adapter($0) } } else if let c = layer as? Conv2d { c.adapter = { adapter($0) } }
        }
    }

    /// The trainable tensors under their PEFT names (without the component prefix):
    /// `<path>.lora_A.weight`, `<path>.lora_B.weight`.
    public var namedParameters: [(String, Tensor)] {
        adapters.flatMap { [("\($0.path).lora_A.weight", $0.down), ("\($0.path).lora_B.weight", $0.up)] }
    }

    public var parameters: [Tensor] { namedParameters.map(\.1) }

    /// Dropout on (true) or off (false) in every adapter.
    public var training: Bool {
        get { adapters.first?.training ?? false }
        set { for a in adapters { a.training = newValue } }
    }

    /// Sets the dropout masks of the next forward pass. Call it once before each
    /// forward (each micro-batch) with a seed from the run's RNG: the same seed gives the
    /// same masks, which gradient checkpointing's recomputation and exact resume need.
    public func reseedDropout(_ seed: UInt64) {
        for (i, a) in adapters.enumerated() {
            a.dropoutSeed = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(i) &* 0xBF58_476D_1CE4_E5B9 &+ 1
        }
    }

    /// Removes the hooks: the model computes its base output again (its parameters stay frozen).
    public func detach() {
        for layer in layers {
            if let l = layer as? Linear { l.adapter = nil } else if let c = layer as? Conv2d { c.adapter = nil }
        }
    }

    /// Adds every adapter's `scale · B·A` into its base layer's weight and detaches.
    public func mergeAndDetach() {
        detach()
        noGrad {
            for (adapter, layer) in zip(adapters, layers) {
                let w = (layer as? Linear)?.weight ?? (layer as! Conv2d).weight
                w.addInPlace(adapter.delta())
            }
        }
    }
}

/// Every module of `model` with its dotted path (the root itself excluded), in declaration order.
public func namedModules(_ model: any Module) -> [(String, any Module)] {
    var out: [(String, any Module)] = []
    func visit(_ m: any Module, _ prefix: String) {
        for (name, entry) in m.entries {
            let path = prefix.isEmpty ? name : "\(prefix).\(name)"
            switch entry {
            case .parameter: break
            case .module(let child): out.append((path, child)); visit(child, path)
            case .list(let children):
                for (i, child) in children.enumerated() { out.append(("\(path).\(i)", child)); visit(child, "\(path).\(i)") }
            }
        }
    }
    visit(model, "")
    return out
}
