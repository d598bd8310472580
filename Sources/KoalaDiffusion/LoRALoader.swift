import Foundation
import KoalaModels
import KoalaTensor

/// A LoRA made by other tools (or by `koalabooth train`), parsed and checked against a
/// pipeline's modules, ready to be merged into their weights (W += scale · alpha/rank · up·down).
///
/// Reads both `LoRAFileFormat`s in every key spelling `LoRAKeyCodec` knows. Alpha comes
/// from a per-module `.alpha` tensor, else the `lora_adapter_metadata` (`lora_alpha`,
/// `alpha_pattern`, `use_rslora`), else alpha = rank. kohya files must name the U-Net in
/// diffusers layout (`lora_unet_down_blocks_…`): the original SGM layout (`input_blocks`,
/// `middle_block`, `output_blocks`) is refused, as KOALA's block layout differs from
/// SDXL's and those names have no counterpart.
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

    public let path: String
    public let format: LoRAFileFormat
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
        format = LoRAFileFormat(keys: names)
        let codec = LoRAKeyCodec(format)

        var problems: [String] = []
        var params: [String: [String: Tensor]] = [:]
        var modules: [String: LoRAKeyCodec.Modules] = [:]
        for (name, module) in components {
            let named = module.namedParameters()
            params[name] = Dictionary(named, uniquingKeysWith: { a, _ in a })
            modules[name] = LoRAKeyCodec.Modules(parameterNames: named.map(\.0))
        }

        // Group the keys by (component, module path).
        struct Parts { var down: String?; var up: String?; var alpha: String? }
        var grouped: [String: (component: String, module: String, parts: Parts)] = [:]
        var order: [String] = []
        for key in names {
            guard let (component, spelled, role) = codec.split(key) else {
                problems.append("\(key) (not a LoRA weight this loader knows)"); continue
            }
            guard let known = modules[component] else {
                problems.append("\(key) (no component '\(component)' in this pipeline)"); continue
            }
            if codec.isSGMLayout(component: component, module: spelled) {
                throw LoRAError("""
                    LoRA file \(path) uses the original SGM/LDM U-Net layout (\(key)); this layout is not \
                    supported for KOALA U-Nets, whose block layout differs from SDXL's. Use a LoRA trained \
                    on this model in diffusers layout (lora_unet_down_blocks_…, or a diffusers/PEFT file).
                    """)
            }
            guard let module = codec.modulePath(spelled, in: known) else {
                problems.append("\(key) (no module \(spelled) in \(component))"); continue
            }
            let id = "\(component)/\(module)"
            if grouped[id] == nil { grouped[id] = (component, module, Parts()); order.append(id) }
            switch role {
            case .down: grouped[id]!.parts.down = key
            case .up: grouped[id]!.parts.up = key
            case .alpha: grouped[id]!.parts.alpha = key
            }
        }

        let adapterMetadata = try? LoRAAdapterMetadata.read(file.metadata)
        var updates: [Update] = []
        for id in order {
            let (component, module, parts) = grouped[id]!
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
                alpha = meta.alpha(component: component, module: module) ?? alpha
                rsLoRA = meta.usesRSLoRA(component: component)
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

    /// A NaN or infinity in a LoRA (a diverged training run, a damaged file) would turn
    /// every merged weight it touches non-finite and every picture black.
    static func requireFinite(_ t: Tensor, key: String, path: String) throws {
        guard let bad = t.firstNonFinite() else { return }
        throw LoRAError("LoRA file \(path) is unusable: tensor \(key) holds \(bad.value) at element \(bad.index) (NaN or infinite values; the training run that wrote it diverged, or the file is damaged). Use an earlier checkpoint or retrain")
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
