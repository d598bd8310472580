import Foundation
import KoalaModels
import KoalaTensor

/// Trained LoRA networks to and from their checkpoint files.
extension LoRAFile {
    /// The file of `networks` (one per component): their adapters' current weights and configs.
    public init(_ networks: [LoRANetwork]) {
        self.init(components: networks.map { net in
            Component(name: net.component, config: net.config,
                      adapters: net.adapters.map { (module: $0.path, down: $0.down.detached(), up: $0.up.detached()) })
        })
    }

    /// Loads adapter weights saved by `write` (either format) into `networks`, for
    /// resuming a run. Every adapter must be present with the same shape (and, in kohya
    /// files, the same alpha); other components' tensors in the file are ignored.
    public static func load(_ path: String, into networks: [LoRANetwork]) throws {
        let file = try SafeTensorsFile(path: path)
        let codec = LoRAKeyCodec(LoRAFileFormat(keys: file.names))
        var staged: [(Tensor, Tensor)] = []
        for net in networks {
            for a in net.adapters {
                let alphaKey = codec.key(component: net.component, module: a.path, role: .alpha)
                if codec.format == .kohya, file.entries[alphaKey] != nil {
                    let alpha = try file.tensor(alphaKey).item
                    guard abs(alpha - net.config.alpha) <= 1e-3 * max(1, abs(alpha)) else {
                        throw LoRAError("\(path): \(codec.base(component: net.component, module: a.path)) has alpha \(alpha) but the run uses "
                            + "lora_alpha \(net.config.alpha); resume with the recipe the file was trained with")
                    }
                }
                for (role, param) in [(LoRATensorRole.down, a.down), (LoRATensorRole.up, a.up)] {
                    let key = codec.key(component: net.component, module: a.path, role: role)
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
}
