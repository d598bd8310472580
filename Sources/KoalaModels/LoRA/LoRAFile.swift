import Foundation
import KoalaTensor

/// A LoRA file as KoalaBooth writes it: each component's adapters (a down/up pair per
/// adapted module) and the config they were trained with, in either format, so that
/// diffusers' `load_lora_weights` and kohya's loaders (A1111, ComfyUI) read it.
public struct LoRAFile {
    /// One component's adapters.
    public struct Component {
        /// "unet", "text_encoder" or "text_encoder_2".
        public var name: String
        public var config: LoRAConfig
        /// Module path, down [r, in] or [r, in, k, k], up [out, r] or [out, r, 1, 1].
        public var adapters: [(module: String, down: Tensor, up: Tensor)]

        public init(name: String, config: LoRAConfig, adapters: [(module: String, down: Tensor, up: Tensor)]) {
            self.name = name
            self.config = config
            self.adapters = adapters
        }
    }

    /// At most one per name.
    public var components: [Component]

    public init(components: [Component]) { self.components = components }

    /// The tensors (not yet written) in `format`. diffusers files keep alpha in the
    /// metadata; kohya files carry it as a scalar per module.
    public func tensors(format: LoRAFileFormat) -> [String: Tensor] {
        let codec = LoRAKeyCodec(format)
        var out: [String: Tensor] = [:]
        for c in components {
            for a in c.adapters {
                out[codec.key(component: c.name, module: a.module, role: .down)] = a.down
                out[codec.key(component: c.name, module: a.module, role: .up)] = a.up
                if format == .kohya { out[codec.key(component: c.name, module: a.module, role: .alpha)] = Tensor.scalar(c.config.alpha) }
            }
        }
        return out
    }

    /// The safetensors header metadata in `format`.
    public func metadata(format: LoRAFileFormat) -> [String: String] {
        switch format {
        case .diffusers:
            return ["format": "pt", LoRAAdapterMetadata.key: LoRAAdapterMetadata(components.map { (component: $0.name, config: $0.config) }).json]
        case .kohya:
            // sd-scripts' training metadata names one network for the whole file.
            let c = components.first?.config
            return ["ss_network_module": "networks.lora", "ss_network_dim": c.map { "\($0.rank)" } ?? "",
                    "ss_network_alpha": c.map { "\($0.alpha)" } ?? "", "ss_training_comment": "KoalaBooth"]
        }
    }

    /// Writes the file to `path` atomically.
    public func write(to path: String, format: LoRAFileFormat = .diffusers, dtype: SafeTensorsDType = .F32) throws {
        precondition(Set(components.map(\.name)).count == components.count, "LoRAFile.write: one entry per component")
        try SafeTensors.write(tensors(format: format), to: path, dtype: dtype, metadata: metadata(format: format))
    }

    /// The LoRA configs recorded in a diffusers-format file's metadata, per component
    /// (empty when the file carries none).
    public static func configs(_ path: String) throws -> [String: LoRAConfig] {
        let file = try SafeTensorsFile(path: path)
        return try LoRAAdapterMetadata.read(file.metadata)?.configs(source: path) ?? [:]
    }
}
