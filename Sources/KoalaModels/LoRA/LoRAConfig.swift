/// What a component's LoRA adapters are: rank, alpha, dropout and which layers get one
/// (PEFT's `LoraConfig`, which diffusers-format files carry in their metadata).
public struct LoRAConfig: Codable, Equatable, Sendable {
    /// Rank r of the low-rank update.
    public var rank: Int
    /// The update is scaled by `alpha / rank`.
    public var alpha: Float
    /// Dropout probability on the adapter's input (training only).
    public var dropout: Float
    /// PEFT-style target names: a layer is adapted when its module path equals a target
    /// or ends with `"." + target` (`to_q` matches `…attn1.to_q`).
    public var targetModules: [String]

    /// Attention projections of the U-Net's transformer blocks (the default).
    public static let attentionTargets = ["to_q", "to_k", "to_v", "to_out.0"]
    /// The U-Net's GEGLU feed-forward projections.
    public static let feedForwardTargets = ["ff.net.0.proj", "ff.net.2"]
    /// The U-Net's resnet 3x3 convolutions.
    public static let resnetConvTargets = ["conv1", "conv2"]
    /// Attention projections of the CLIP text encoders.
    public static let textEncoderTargets = ["q_proj", "k_proj", "v_proj", "out_proj"]

    public init(rank: Int, alpha: Float, dropout: Float = 0, targetModules: [String] = LoRAConfig.attentionTargets) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targetModules = targetModules
    }

    /// alpha / rank.
    public var scale: Float { alpha / Float(rank) }

    /// Whether the layer at `path` is a target.
    public func matches(_ path: String) -> Bool {
        targetModules.contains { path == $0 || path.hasSuffix("." + $0) }
    }

    /// Throws for values a run cannot use.
    public func validate() throws {
        guard rank >= 1 else { throw LoRAError("LoRA rank must be at least 1, got \(rank)") }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("LoRA alpha must be a positive number, got \(alpha)") }
        guard dropout >= 0, dropout < 1 else { throw LoRAError("LoRA dropout must be in [0, 1), got \(dropout)") }
        guard !targetModules.isEmpty else { throw LoRAError("LoRA target_modules is empty: name at least one layer (e.g. to_q)") }
    }
}
