import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaModels
import KoalaTensor

extension DistillationExample {
    /// Encodes a captioned folder once, as distillation trains on it: each image resized
    /// and cropped into its `data` bucket (`DreamBoothDataset.prepare`), encoded by the
    /// teacher's VAE to its latent mean (× the scaling factor; one latent per image, so
    /// that the cache is the whole data set) with its SDXL size and crop conditioning,
    /// and its caption by both frozen text encoders.
    /// - Parameter progress: called after each image with the number done.
    public static func encode(_ folder: CaptionedImageFolder, data: TrainingRecipe.DataSection, seed: UInt64,
                              pipeline: StableDiffusionXLPipeline, progress: (Int) -> Void = { _ in }) throws -> [DistillationExample] {
        let multiple = DreamBoothDataset.pixelMultiple(vae: pipeline.vae.config, unet: pipeline.unet.config)
        var data = data
        data.latents = .mean
        let prompts = try TrainingPromptEncoder(pipeline: pipeline, prompts: folder.items.map(\.caption), lora: nil, seed: seed)
        var out: [DistillationExample] = []
        for (i, item) in folder.items.enumerated() {
            let photo: RGBImage
            do { photo = try RGBImage.load(path: item.image.path) } catch {
                throw TrainingError("\(item.image.path) cannot be read as an image (\(error)); remove it or replace it with a JPEG or PNG")
            }
            let image = try DreamBoothDataset.prepare([photo], data: data, seed: seed &+ UInt64(i), pixelMultiple: multiple)
            let encoded = EncodedExamples(image, vae: pipeline.vae, sampling: .mean)
            let text = prompts.embeddings(for: item.caption)
            out.append(DistillationExample(latents: encoded.latents[0].mean, hiddenStates: text.hidden, pooled: text.pooled,
                                           timeIds: encoded.timeIds[0]))
            progress(i + 1)
        }
        return out
    }
}
