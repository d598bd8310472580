import Foundation
import KoalaModels
import KoalaTensor

/// A LoRA file that does not fit the pipeline, phrased for the user.
public struct LoRAError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A LoRA made by other tools, parsed and checked against a pipeline's modules, ready to
/// be merged into their weights (W += scale · alpha/rank · up·down).
///
/// Reads the key layouts in use for SDXL-family LoRAs:
/// - diffusers/PEFT (`StableDiffusionXLPipeline.save_lora_weights`): `unet.<module>`,
///   `text_encoder.<module>`, `text_encoder_2.<module>` with `.lora_A.weight`/`.lora_B.weight`,
///   or the older `.lora.down/.up.weight`, `.lora_linear_layer.down/.up.weight` and
///   attention-processor (`.processor.to_q_lora.down.weight`) names. Alpha comes from a
///   per-module `.alpha` tensor, else the `lora_adapter_metadata` JSON (`lora_alpha`,
///   `alpha_pattern`, `use_rslora`), else alpha = rank.
/// - kohya (sd-scripts): `lora_unet_<module with . as _>`, `lora_te1_…`, `lora_te2_…` with
///   `.lora_down.weight`, `.lora_up.weight` and `.alpha`, for U-Nets in diffusers layout.
///   The original SGM layout (`input_blocks`, `middle_block`, `output_blocks`) is refused:
///   KOALA's block layout differs from SDXL's, so those names have no counterpart.
public struct LoRA {
    /// One low-rank update of a parameter.
    public struct Update {
        /// "unet", "text_encoder" or "text_encoder_2".
        public let component: String
        /// The parameter's path in its component (`down_blocks.1…attn1.to_q.weight`).
        public let parameter: String
        /// [rank, in] or [rank, in, kh, kw].
        public let down: Tensor
        /// [out, rank] or [out, rank, 1, 1].
        public let up: Tensor
        /// alpha / rank (alpha / √rank for rsLoRA).
        public let alphaScale: Float
    }

    public enum Format: String, Sendable { case diffusers, kohya }

    public let path: String
    public let format: Format
    public let updates: [Update]

    /// Reads `path` and matches every key to a weight of `components` (name → module; the
    /// names are "unet", "text_encoder", "text_encoder_2"). Throws `LoRAError` listing the
    /// keys that fit nothing, or shapes that do not fit, before anything is changed.
    public init(contentsOf path: String, components: [String: any Module]) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw LoRAError("LoRA file \(path) does not exist")
        }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path, maxBytes: 8 << 30) } catch {
            throw LoRAError("LoRA file \(path) is not a readable safetensors file: \(error)")
        }
        let names = file.names
        guard !names.isEmpty else { throw LoRAError("LoRA file \(path) holds no tensors") }
        self.path = path
        format = names.contains { $0.hasPrefix("lora_unet_") || $0.hasPrefix("lora_te") } ? .kohya : .diffusers

        var problems: [String] = []
        // Parameter paths per component, and kohya's underscore spelling of each module.
        var params: [String: [String: Tensor]] = [:]
        var kohyaNames: [String: [String: String]] = [:]
        for (name, module) in components {
            let dict = Dictionary(module.namedParameters(), uniquingKeysWith: { a, _ in a })
            params[name] = dict
            var underscored: [String: String] = [:]
            for key in dict.keys where key.hasSuffix(".weight") {
                let modulePath = String(key.dropLast(".weight".count))
                underscored[modulePath.replacingOccurrences(of: ".", with: "_")] = modulePath
            }
            kohyaNames[name] = underscored
        }

        // Group the keys by (component, module path).
        struct Parts { var down: String?; var up: String?; var alpha: String? }
        var modules: [String: (component: String, module: String, parts: Parts)] = [:]
        var order: [String] = []
        for key in names {
            guard let (component, rawModule, role) = Self.split(key, format: format) else {
                problems.append("\(key) (not a LoRA weight this loader knows)"); continue
            }
            guard let known = params[component] else {
                problems.append("\(key) (no component '\(component)' in this pipeline)"); continue
            }
            let module: String
            if format == .kohya {
                if component == "unet", ["input_blocks_", "middle_block_", "output_blocks_"].contains(where: rawModule.hasPrefix) {
                    throw LoRAError("""
                        LoRA file \(path) uses the original SGM/LDM U-Net layout (\(key)); this layout is not \
                        supported for KOALA U-Nets, whose block layout differs from SDXL's. Use a LoRA trained \
                        on this model in diffusers layout (lora_unet_down_blocks_…, or a diffusers/PEFT file).
                        """)
                }
                let table = kohyaNames[component] ?? [:]
                guard let m = table[rawModule] ?? table["text_model_" + rawModule] else {
                    problems.append("\(key) (no module \(rawModule) in \(component))"); continue
                }
                module = m
            } else {
                // transformers 5 leaves CLIPTextModel's `text_model.` level out of module paths.
                if known[rawModule + ".weight"] != nil { module = rawModule } else if known["text_model." + rawModule + ".weight"] != nil {
                    module = "text_model." + rawModule
                } else {
                    problems.append("\(key) (no module \(rawModule) in \(component))"); continue
                }
            }
            let id = "\(component)/\(module)"
            if modules[id] == nil { modules[id] = (component, module, Parts()); order.append(id) }
            switch role {
            case "down": modules[id]!.parts.down = key
            case "up": modules[id]!.parts.up = key
            default: modules[id]!.parts.alpha = key
            }
        }

        let adapterMetadata = Self.adapterMetadata(file.metadata)
        var updates: [Update] = []
        for id in order {
            let (component, module, parts) = modules[id]!
            guard let downKey = parts.down, let upKey = parts.up else {
                problems.append("\(parts.down ?? parts.up ?? parts.alpha!) (its \(parts.down == nil ? "down/lora_A" : "up/lora_B") weight is missing)")
                continue
            }
            let down = try file.tensor(downKey).contiguous(), up = try file.tensor(upKey).contiguous()
            for (key, t) in [(downKey, down), (upKey, up)] { try Self.requireFinite(t, key: key, path: path) }
            let weight = params[component]![module + ".weight"]!
            let rank = down.shape.first ?? 0
            let rest = weight.shape.dropFirst().reduce(1, *)
            let fits = down.rank >= 2 && up.rank >= 2 && rank > 0 && up.shape[1] == rank
                && up.shape.dropFirst(2).allSatisfy { $0 == 1 } && up.shape[0] == weight.shape[0]
                && down.count / rank == rest
                && (down.rank != weight.rank || Array(down.shape.dropFirst()) == Array(weight.shape.dropFirst()))
            guard fits else {
                problems.append("\(component).\(module): down \(down.shape) · up \(up.shape) does not fit the weight \(weight.shape)")
                continue
            }
            var alpha = Float(rank), rsLoRA = false
            if let alphaKey = parts.alpha {
                let a = try file.tensor(alphaKey)
                guard a.count == 1 else { problems.append("\(alphaKey) (alpha must be a single value, has shape \(a.shape))"); continue }
                try Self.requireFinite(a, key: alphaKey, path: path)
                alpha = a.contiguous().data[0]
            } else if let meta = adapterMetadata {
                alpha = Self.metadataAlpha(meta, component: component, module: module) ?? alpha
                rsLoRA = (meta["\(component).use_rslora"] as? Bool) ?? false
            }
            let scale = rsLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank)
            updates.append(Update(component: component, parameter: module + ".weight", down: down, up: up, alphaScale: scale))
        }
        if !problems.isEmpty {
            throw LoRAError("""
                LoRA file \(path) (\(format.rawValue) format) does not fit this model; nothing was applied. \
                \(problems.count) problem(s):
                  \(problems.prefix(10).joined(separator: "\n  "))\(problems.count > 10 ? "\n  …" : "")
                The file may be for another model family (e.g. SD 1.5 or SDXL itself), or in a layout this loader does not read.
                """)
        }
        self.updates = updates
    }

    /// Adds `scale` times every update to its weight in `components` (the modules given to
    /// `init`, or ones with the same parameter shapes).
    public func merge(into components: [String: any Module], scale: Float = 1) {
        for (name, module) in components {
            let params = Dictionary(module.namedParameters(), uniquingKeysWith: { a, _ in a })
            for u in updates where u.component == name {
                guard let w = params[u.parameter] else { preconditionFailure("LoRA merge: \(name).\(u.parameter) is not in the module") }
                precondition(w.isContiguous, "LoRA merge: \(name).\(u.parameter) is not contiguous")
                let rank = u.down.shape[0], out = w.shape[0], rest = w.count / out
                BLAS.sgemm(transA: false, transB: false, m: out, n: rest, k: rank, alpha: scale * u.alphaScale,
                           a: u.up.data, lda: rank, b: u.down.data, ldb: rest, beta: 1, c: w.data, ldc: rest)
            }
        }
    }

    /// (component, module path as written, role) of a key, or nil if it is not a LoRA key.
    static func split(_ key: String, format: Format) -> (String, String, String)? {
        let suffixes: [(String, String)]
        var component: String, rest: Substring
        if format == .kohya {
            suffixes = [(".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha")]
            let prefixes = [("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder")]
            guard let (p, c) = prefixes.first(where: { key.hasPrefix($0.0) }) else { return nil }
            component = c; rest = key.dropFirst(p.count)
        } else {
            suffixes = [(".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora.down.weight", "down"), (".lora.up.weight", "up"),
                        (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"), (".alpha", "alpha")]
            guard let dot = key.firstIndex(of: ".") else { return nil }
            component = String(key[..<dot]); rest = key[key.index(after: dot)...]
        }
        for (suffix, role) in suffixes where rest.hasSuffix(suffix) {
            var module = String(rest.dropLast(suffix.count))
            // Attention-processor era: `attn1.processor.to_q_lora` is `attn1.to_q`.
            if format == .diffusers, let r = module.range(of: ".processor.") {
                let proj = module[r.upperBound...]
                let mapped = ["to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"][String(proj)]
                guard let mapped else { return nil }
                module = module[..<r.lowerBound] + "." + mapped
            }
            return (component, module, role)
        }
        return nil
    }

    /// A NaN or infinity in a LoRA (a diverged training run, a damaged file) would turn
    /// every merged weight it touches non-finite and every picture black.
    static func requireFinite(_ t: Tensor, key: String, path: String) throws {
        guard let bad = t.firstNonFinite() else { return }
        throw LoRAError("LoRA file \(path) is unusable: tensor \(key) holds \(bad.value) at element \(bad.index) (NaN or infinite values; the training run that wrote it diverged, or the file is damaged). Use an earlier checkpoint or retrain")
    }

    static func adapterMetadata(_ metadata: [String: String]) -> [String: Any]? {
        guard let json = metadata["lora_adapter_metadata"], let data = json.data(using: .utf8) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    /// PEFT's alpha for a module: `alpha_pattern` entries (matched as module-path suffixes),
    /// else `lora_alpha`.
    static func metadataAlpha(_ meta: [String: Any], component: String, module: String) -> Float? {
        func number(_ v: Any?) -> Float? { (v as? NSNumber).map { $0.floatValue } }
        if let pattern = meta["\(component).alpha_pattern"] as? [String: Any] {
            let short = module.hasPrefix("text_model.") ? String(module.dropFirst("text_model.".count)) : module
            for (k, v) in pattern.sorted(by: { $0.key.count > $1.key.count })
            where [module, short].contains(where: { $0 == k || $0.hasSuffix("." + k) }) {
                if let a = number(v) { return a }
            }
        }
        return number(meta["\(component).lora_alpha"])
    }
}

extension StableDiffusionXLPipeline {
    /// The modules a LoRA can change, by the names LoRA files use.
    public var loraComponents: [String: any Module] {
        ["unet": unet, "text_encoder": textEncoder, "text_encoder_2": textEncoder2]
    }

    /// Reads the LoRA at `path` (diffusers/PEFT or kohya format) and merges it into the
    /// weights at `scale` (as diffusers' `fuse_lora(lora_scale:)`). Throws `LoRAError`, with
    /// nothing changed, when the file does not fit. Returns the parsed LoRA.
    @discardableResult
    public func applyLoRA(path: String, scale: Float = 1) throws -> LoRA {
        let lora = try LoRA(contentsOf: path, components: loraComponents)
        lora.merge(into: loraComponents, scale: scale)
        return lora
    }
}
