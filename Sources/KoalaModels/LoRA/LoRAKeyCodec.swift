/// Which tensor of an adapted module a LoRA key holds.
public enum LoRATensorRole: Sendable {
    /// A: PEFT's `lora_A`, kohya's `lora_down`: [rank, in] or [rank, in, kh, kw].
    case down
    /// B: `lora_B` / `lora_up`: [out, rank] or [out, rank, 1, 1].
    case up
    /// The scalar alpha; the update is scaled by alpha / rank.
    case alpha
}

/// LoRA file keys ↔ (component, module path, role), in one format's key style. The
/// loader that merges files for generation and the exporter that writes them during
/// training both go through it, so every key KoalaBooth writes is one it reads.
///
/// Components carry diffusers' names (`unet`, `text_encoder`, `text_encoder_2`); module
/// paths are the checkpoint's (`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`,
/// whose parameter is `<module>.weight`).
/// - diffusers/PEFT: `<component>.<module>` + `.lora_A.weight` / `.lora_B.weight` (written),
///   or the older `.lora.down/.up.weight`, `.lora_linear_layer.down/.up.weight`; `.alpha`.
///   An attention-processor path before one of these endings (`attn1.processor.to_q_lora`)
///   names its projection (`attn1.to_q`). Files of that era that end in
///   `to_q_lora.down.weight` match no ending and are refused.
/// - kohya: `lora_unet_` / `lora_te1_` / `lora_te2_` (read also `lora_te_`, SD 1.x's one
///   encoder) + the module path with `_` for `.` + `.lora_down.weight` / `.lora_up.weight` / `.alpha`.
public struct LoRAKeyCodec: Sendable {
    public let format: LoRAFileFormat

    public init(_ format: LoRAFileFormat) { self.format = format }

    /// kohya's prefix of each component; a component's first entry is the one written.
    private static let kohyaPrefixes: [(prefix: String, component: String)] = [
        ("lora_unet", "unet"), ("lora_te1", "text_encoder"), ("lora_te2", "text_encoder_2"), ("lora_te", "text_encoder"),
    ]

    /// Key endings in the order they are matched; a role's first ending is the one written.
    private static let diffusersSuffixes: [(suffix: String, role: LoRATensorRole)] = [
        (".lora_A.weight", .down), (".lora_B.weight", .up), (".lora.down.weight", .down), (".lora.up.weight", .up),
        (".lora_linear_layer.down.weight", .down), (".lora_linear_layer.up.weight", .up), (".alpha", .alpha),
    ]
    private static let kohyaSuffixes: [(suffix: String, role: LoRATensorRole)] = [
        (".lora_down.weight", .down), (".lora_up.weight", .up), (".alpha", .alpha),
    ]

    /// Attention-processor era (diffusers < 0.20): `attn1.processor.to_q_lora` is `attn1.to_q`.
    private static let processorProjections = ["to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"]

    /// SGM/LDM U-Net block names (`input_blocks_4_1_…`), which kohya files of the original
    /// SDXL checkpoint layout carry.
    private static let sgmBlockPrefixes = ["input_blocks_", "middle_block_", "output_blocks_"]

    private var suffixes: [(suffix: String, role: LoRATensorRole)] {
        format == .kohya ? Self.kohyaSuffixes : Self.diffusersSuffixes
    }

    /// What a module's keys start with: `unet.<module>` (diffusers) or
    /// `lora_unet_<module with _ for .>` (kohya).
    public func base(component: String, module: String) -> String {
        switch format {
        case .diffusers:
            return "\(component).\(module)"
        case .kohya:
            let prefix = Self.kohyaPrefixes.first { $0.component == component }?.prefix ?? "lora_" + component
            return prefix + "_" + module.replacingOccurrences(of: ".", with: "_")
        }
    }

    /// The key a LoRA file gives `role` of `module` in `component`.
    public func key(component: String, module: String, role: LoRATensorRole) -> String {
        base(component: component, module: module) + suffixes.first { $0.role == role }!.suffix
    }

    /// The component, the module as the key spells it (for kohya with `_` for `.`; see
    /// `modulePath(_:in:)`) and the role of `key`; nil when it is no LoRA key of this style.
    public func split(_ key: String) -> (component: String, module: String, role: LoRATensorRole)? {
        let component: String, rest: Substring
        switch format {
        case .kohya:
            guard let (prefix, c) = Self.kohyaPrefixes.first(where: { key.hasPrefix($0.prefix + "_") }) else { return nil }
            component = c
            rest = key.dropFirst(prefix.count + 1)
        case .diffusers:
            guard let dot = key.firstIndex(of: ".") else { return nil }
            component = String(key[..<dot])
            rest = key[key.index(after: dot)...]
        }
        guard let (suffix, role) = suffixes.first(where: { rest.hasSuffix($0.suffix) }) else { return nil }
        var module = String(rest.dropLast(suffix.count))
        if format == .diffusers, let r = module.range(of: ".processor.") {
            guard let projection = Self.processorProjections[String(module[r.upperBound...])] else { return nil }
            module = module[..<r.lowerBound] + "." + projection
        }
        return (component, module, role)
    }

    /// The module paths of one component that LoRA keys can name (those with a `.weight`
    /// parameter), with kohya's underscore spelling of each.
    public struct Modules: Sendable {
        fileprivate let paths: Set<String>
        fileprivate let kohyaSpellings: [String: String]

        /// From the component's parameter names (`Module.namedParameters()`).
        public init(parameterNames: some Sequence<String>) {
            var paths = Set<String>(), kohya: [String: String] = [:]
            for name in parameterNames where name.hasSuffix(".weight") {
                let path = String(name.dropLast(".weight".count))
                paths.insert(path)
                let spelling = path.replacingOccurrences(of: ".", with: "_")
                if kohya[spelling] == nil { kohya[spelling] = path }  // the first in model order, should two collide
            }
            self.paths = paths
            kohyaSpellings = kohya
        }
    }

    /// The path in `modules` of a module as `split` spelled it, or nil when it names none.
    /// Files written from transformers 5's `CLIPTextModel` leave out the checkpoint's
    /// `text_model.` level; they still name that module.
    public func modulePath(_ spelled: String, in modules: Modules) -> String? {
        switch format {
        case .diffusers: return [spelled, "text_model." + spelled].first { modules.paths.contains($0) }
        case .kohya: return modules.kohyaSpellings[spelled] ?? modules.kohyaSpellings["text_model_" + spelled]
        }
    }

    /// Whether `module` (as `split` spelled it) is a U-Net block in the original SGM/LDM
    /// layout, which KOALA U-Nets have no counterpart for (their block layout differs from SDXL's).
    public func isSGMLayout(component: String, module: String) -> Bool {
        format == .kohya && component == "unet" && Self.sgmBlockPrefixes.contains(where: module.hasPrefix)
    }
}
