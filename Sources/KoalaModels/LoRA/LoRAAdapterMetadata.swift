import Foundation

/// diffusers' `lora_adapter_metadata` safetensors header entry: each component's PEFT
/// `LoraConfig`, its fields packed as `"<component>.<field>"` into one JSON object.
/// `save_lora_weights` writes it and `load_lora_weights` builds the LoraConfig back from
/// it, so rank and alpha survive exactly.
public struct LoRAAdapterMetadata {
    /// The header entry's name.
    public static let key = "lora_adapter_metadata"

    /// JSON values per component, then per LoraConfig field (`r`, `lora_alpha`, `alpha_pattern`, …).
    public let fields: [String: [String: Any]]

    /// The entry of `configs` (component, config), with the fields diffusers writes.
    public init(_ configs: [(component: String, config: LoRAConfig)]) {
        var fields: [String: [String: Any]] = [:]
        for (component, c) in configs {
            fields[component] = [
                "r": c.rank, "lora_alpha": Double(c.alpha), "lora_dropout": Double(c.dropout),
                "target_modules": c.targetModules.sorted(), "init_lora_weights": true, "bias": "none",
                "use_dora": false, "use_rslora": false,
            ]
        }
        self.fields = fields
    }

    private init(fields: [String: [String: Any]]) { self.fields = fields }

    /// The entry in a file's header `metadata`; nil when it has none or the entry is no
    /// JSON object. Throws when the entry is not JSON.
    public static func read(_ metadata: [String: String]) throws -> LoRAAdapterMetadata? {
        guard let raw = metadata[Self.key], let packed = try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] else {
            return nil
        }
        var fields: [String: [String: Any]] = [:]
        for (name, value) in packed {
            guard let dot = name.lastIndex(of: ".") else { continue }
            fields[String(name[..<dot]), default: [:]][String(name[name.index(after: dot)...])] = value
        }
        return LoRAAdapterMetadata(fields: fields)
    }

    /// The entry's text, as diffusers writes it (indent 2, sorted keys).
    public var json: String {
        var packed: [String: Any] = [:]
        for (component, f) in fields {
            for (field, value) in f { packed["\(component).\(field)"] = value }
        }
        let data = try! JSONSerialization.data(withJSONObject: packed, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    /// Each component's config. Throws when a component lacks `r` or `lora_alpha`;
    /// `source` names the file in the message.
    public func configs(source: String) throws -> [String: LoRAConfig] {
        var out: [String: LoRAConfig] = [:]
        for (component, f) in fields {
            guard let r = f["r"] as? Int, let alpha = (f["lora_alpha"] as? NSNumber)?.floatValue else {
                throw LoRAError("\(source): \(Self.key) for \(component) lacks r or lora_alpha")
            }
            out[component] = LoRAConfig(rank: r, alpha: alpha, dropout: (f["lora_dropout"] as? NSNumber)?.floatValue ?? 0,
                                        targetModules: (f["target_modules"] as? [String]) ?? LoRAConfig.attentionTargets)
        }
        return out
    }

    /// PEFT's alpha for `module` (a path in `component`): the longest `alpha_pattern`
    /// entry the path (or the path without `text_model.`) ends with, else `lora_alpha`;
    /// nil when neither is there.
    public func alpha(component: String, module: String) -> Float? {
        func number(_ v: Any?) -> Float? { (v as? NSNumber).map { $0.floatValue } }
        let f = fields[component] ?? [:]
        if let pattern = f["alpha_pattern"] as? [String: Any] {
            let short = module.hasPrefix("text_model.") ? String(module.dropFirst("text_model.".count)) : module
            for (k, v) in pattern.sorted(by: { $0.key.count != $1.key.count ? $0.key.count > $1.key.count : $0.key < $1.key })
            where [module, short].contains(where: { $0 == k || $0.hasSuffix("." + k) }) {
                if let a = number(v) { return a }
            }
        }
        return number(f["lora_alpha"])
    }

    /// Whether `component`'s update is scaled by alpha / √rank (rsLoRA) instead of alpha / rank.
    public func usesRSLoRA(component: String) -> Bool {
        (fields[component]?["use_rslora"] as? Bool) ?? false
    }
}
