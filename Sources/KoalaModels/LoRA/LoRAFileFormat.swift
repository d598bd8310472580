/// The two key layouts of SDXL-family LoRA files. `LoRAKeyCodec` spells the keys of each,
/// `LoRAFile` writes the tensors and header metadata of each.
public enum LoRAFileFormat: String, Codable, Sendable, CaseIterable {
    /// diffusers / PEFT: `unet.<module path>.lora_A.weight` / `.lora_B.weight` and the
    /// adapter configs in the `lora_adapter_metadata` header entry, as
    /// `StableDiffusionXLPipeline.save_lora_weights` writes (and `load_lora_weights` reads);
    /// read also in diffusers' older spellings.
    case diffusers
    /// kohya-ss (sd-scripts; A1111, ComfyUI): `lora_unet_<module path with _>.lora_down.weight`,
    /// `.lora_up.weight` and a scalar `.alpha`; text encoders as `lora_te1_` / `lora_te2_`.
    case kohya

    /// The layout of a file holding the tensors `keys`: kohya when any key starts like a
    /// kohya U-Net or text-encoder key, else diffusers.
    public init(keys: some Sequence<String>) {
        self = keys.contains { $0.hasPrefix("lora_unet_") || $0.hasPrefix("lora_te") } ? .kohya : .diffusers
    }
}
