import Foundation
import KoalaTensor

/// On-disk layouts of a LoRA file.
public enum LoRAFileFormat: String, Codable, Sendable, CaseIterable {
    /// diffusers / PEFT: `unet.<module path>.lora_A.weight` / `.lora_B.weight` and the
    /// adapter configs in the `lora_adapter_metadata` header entry, as
    /// `StableDiffusionXLPipeline.save_lora_weights` writes (and `load_lora_weights` reads).
    case diffusers
    /// kohya-ss (A1111, ComfyUI): `lora_unet_<module path with _>.lora_down.weight`,
    /// `.lora_up.weight` and a scalar `.alpha`; text encoders as `lora_te1_` / `lora_te2_`.
    case kohya
}

/// Writing and reading LoRA adapter files.
public enum LoRAFile {
    /// The kohya prefix of a diffusers component name.
    static func kohyaPrefix(_ component: String) -> String {
        switch component {
        case "unet": return "lora_unet"
        case "text_encoder": return "lora_te1"
        case "text_encoder_2": return "lora_te2"
        default: return "lora_" + component
        }
    }

    /// The tensors (not yet written) of `networks` in `format`.
    public static func tensors(_ networks: [LoRANetwork], format: LoRAFileFormat) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for net in networks {
            for a in net.adapters {
                switch format {
                case .diffusers:
                    out["\(net.component).\(a.path).lora_A.weight"] = a.down.detached()
                    out["\(net.component).\(a.path).lora_B.weight"] = a.up.detached()
                case .kohya:
                    let base = kohyaPrefix(net.component) + "_" + a.path.replacingOccurrences(of: ".", with: "_")
                    out["\(base).lora_down.weight"] = a.down.detached()
                    out["\(base).lora_up.weight"] = a.up.detached()
                    out["\(base).alpha"] = Tensor.scalar(net.config.alpha)
                }
            }
        }
        return out
    }

    /// The safetensors header metadata of `networks` in `format`.
    public static func metadata(_ networks: [LoRANetwork], format: LoRAFileFormat) -> [String: String] {
        switch format {
        case .diffusers:
            // diffusers packs each component's LoraConfig fields as "<component>.<field>"
            // into one JSON object (indent 2, sorted keys); load_lora_weights builds the
            // LoraConfig back from it, so r and lora_alpha survive exactly.
            var packed: [String: Any] = [:]
            for net in networks {
                let c = net.config
                let fields: [String: Any] = [
                    "r": c.rank, "lora_alpha": Double(c.alpha), "lora_dropout": Double(c.dropout),
                    "target_modules": c.targetModules.sorted(), "init_lora_weights": true, "bias": "none",
                    "use_dora": false, "use_rslora": false,
                ]
                for (k, v) in fields { packed["\(net.component).\(k)"] = v }
            }
            let json = try! JSONSerialization.data(withJSONObject: packed, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            return ["format": "pt", "lora_adapter_metadata": String(decoding: json, as: UTF8.self)]
        case .kohya:
            let c = networks.first?.config
            return ["ss_network_module": "networks.lora", "ss_network_dim": c.map { "\($0.rank)" } ?? "",
                    "ss_network_alpha": c.map { "\($0.alpha)" } ?? "", "ss_training_comment": "KoalaBooth"]
        }
    }

    /// Writes the adapters of `networks` (one per component) to `path` atomically.
    public static func write(_ networks: [LoRANetwork], to path: String, format: LoRAFileFormat = .diffusers,
                             dtype: SafeTensorsDType = .F32) throws {
        precondition(Set(networks.map(\.component)).count == networks.count, "LoRAFile.write: one network per component")
        try SafeTensors.write(tensors(networks, format: format), to: path, dtype: dtype, metadata: metadata(networks, format: format))
    }

    /// Loads adapter weights saved by `write` (either format) into `networks`, for
    /// resuming a run. Every adapter must be present with the same shape (and, in kohya
    /// files, the same alpha); other components' tensors in the file are ignored.
    public static func load(_ path: String, into networks: [LoRANetwork]) throws {
        let file = try SafeTensorsFile(path: path)
        let isKohya = file.names.contains { $0.hasPrefix("lora_") && $0.hasSuffix(".lora_down.weight") }
        var staged: [(Tensor, Tensor)] = []
        for net in networks {
            for a in net.adapters {
                let keys: (down: String, up: String)
                if isKohya {
                    let base = kohyaPrefix(net.component) + "_" + a.path.replacingOccurrences(of: ".", with: "_")
                    keys = ("\(base).lora_down.weight", "\(base).lora_up.weight")
                    if file.entries["\(base).alpha"] != nil {
                        let alpha = try file.tensor("\(base).alpha").item
                        guard abs(alpha - net.config.alpha) <= 1e-3 * max(1, abs(alpha)) else {
                            throw LoRAError("\(path): \(base) has alpha \(alpha) but the run uses lora_alpha \(net.config.alpha); "
                                + "resume with the recipe the file was trained with")
                        }
                    }
                } else {
                    keys = ("\(net.component).\(a.path).lora_A.weight", "\(net.component).\(a.path).lora_B.weight")
                }
                for (key, param) in [(keys.down, a.down), (keys.up, a.up)] {
                    guard file.entries[key] != nil else {
                        throw LoRAError("\(path) has no tensor \(key): it was not trained with the same LoRA targets "
                            + "(\(net.config.targetModules)) on this model")
                    }
                    let value = try file.tensor(key)
                    guard value.shape == param.shape else {
                        throw LoRAError("\(path): \(key) has shape \(value.shape) but the adapter expects \(param.shape) "
                            + "(rank \(net.config.rank)); resume with the rank the file was trained with")
                    }
                    staged.append((param, value))
                }
            }
        }
        noGrad { for (param, value) in staged { param.assign(value) } }
    }

    /// The LoRA configs recorded in a diffusers-format file's metadata, per component
    /// (empty when the file carries none).
    public static func configs(_ path: String) throws -> [String: LoRAConfig] {
        let file = try SafeTensorsFile(path: path)
        guard let raw = file.metadata["lora_adapter_metadata"],
              let packed = try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] else { return [:] }
        var fields: [String: [String: Any]] = [:]
        for (key, value) in packed {
            guard let dot = key.lastIndex(of: ".") else { continue }
            fields[String(key[..<dot]), default: [:]][String(key[key.index(after: dot)...])] = value
        }
        var out: [String: LoRAConfig] = [:]
        for (component, f) in fields {
            guard let r = f["r"] as? Int, let alpha = (f["lora_alpha"] as? NSNumber)?.floatValue else {
                throw LoRAError("\(path): lora_adapter_metadata for \(component) lacks r or lora_alpha")
            }
            out[component] = LoRAConfig(rank: r, alpha: alpha, dropout: (f["lora_dropout"] as? NSNumber)?.floatValue ?? 0,
                                        targetModules: (f["target_modules"] as? [String]) ?? LoRAConfig.attentionTargets)
        }
        return out
    }
}
