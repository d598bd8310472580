import KoalaModels

/// The component configs of an SDXL-family pipeline, as `model init` writes them.
public struct PipelinePreset: Sendable {
    public var name: String
    public var unet: UNet2DConditionConfig
    public var vae: AutoencoderKLConfig
    public var textEncoder: CLIPTextConfig
    public var textEncoder2: CLIPTextConfig
    public var scheduler: SchedulerConfig

    public static let names = UNet2DConditionConfig.presetNames

    /// `koala-700m`, `koala-1b`, `sdxl-base`: the published pipelines' configs (SDXL
    /// text encoders, fp16-fix SDXL VAE, SDXL's Euler scheduler). `tiny`: KOALA-700M's
    /// structure at toy width with the real tokenizers, for tests and the demo; `tiny-sdxl`:
    /// the same with SDXL's U-Net structure (a distillation teacher for `tiny`).
    public static func named(_ name: String) throws -> PipelinePreset {
        let unet = try UNet2DConditionConfig.preset(name)
        var scheduler = SchedulerConfig.sdxl
        scheduler.className = "EulerDiscreteScheduler"
        if name == "tiny" || name == "tiny-sdxl" {
            return PipelinePreset(name: name, unet: unet, vae: .tiny, textEncoder: .tiny(hiddenAct: "quick_gelu"),
                                  textEncoder2: .tiny(hiddenAct: "gelu"), scheduler: scheduler)
        }
        return PipelinePreset(name: name, unet: unet, vae: .sdxl, textEncoder: .sdxlTextEncoder,
                              textEncoder2: .sdxlTextEncoder2, scheduler: scheduler)
    }
}
