import Foundation
import KoalaDiffusion
import KoalaTensor

extension GenerationParameters {
    /// The parameters that decide an image, keyed as `generate`'s PNG text chunks (and
    /// training's validation images) carry them.
    /// `base` is the model's scheduler config.
    public func textChunks(width: Int, height: Int, model: String, base: SchedulerConfig) -> [String: String] {
        [
            "prompt": prompt, "negative_prompt": negativePrompt ?? "", "seed": "\(seed)",
            "steps": "\(steps)", "scheduler": scheduler.rawValue, "karras": "\(karras)",
            "timestep_spacing": schedulerConfig(base).timestepSpacing.rawValue,
            "guidance": "\(guidance)", "guidance_rescale": "\(guidanceRescale)",
            "width": "\(width)", "height": "\(height)", "count": "\(count)",
            "rng": rng.rawValue, "model": model,
            "vae_tiling": vaeTiling.rawValue,  // as resolved before drawing: on or off
            "precision": Precision.compute.rawValue,  // the resolved one: fp32 or bf16
            "software": "\(Product.name) \(Product.version)",
        ]
    }
}

extension GenerationRequest {
    /// Every parameter that decides the images of this request (with its prompts as
    /// drawn, `p`), as PNG text chunks / safetensors metadata, plus A1111's `parameters` text.
    func metadata(_ p: GenerationParameters, width: Int, height: Int, model: String,
                  schedulerConfig: SchedulerConfig, trained: SubjectCheckpoint?) -> [String: String] {
        var m = p.textChunks(width: width, height: height, model: model, base: schedulerConfig)
        if let latents { m["seed"] = nil; m["latents"] = latents }
        if let lora { m["lora"] = lora; m["lora_scale"] = "\(loraScale)" }
        if let subject { m["subject"] = subject }
        var info = Infotext(parameters: p, schedulerConfig: p.schedulerConfig(schedulerConfig),
                            width: width, height: height, modelPath: model)
        info.seeded = latents == nil
        info.loras = (lora.map { [Infotext.LoRA.file($0, scale: loraScale)] } ?? []) + (trained?.infotextLoRA(scale: loraScale).map { [$0] } ?? [])
        m["parameters"] = info.text
        return m
    }
}
