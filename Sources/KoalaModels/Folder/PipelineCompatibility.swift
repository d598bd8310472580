import Foundation

/// Whether the components of an SDXL pipeline folder fit each other. Each config is
/// valid on its own, but a folder assembled from different models would otherwise
/// reach the shape preconditions of the ops (a token id past the embedding table, a
/// text width the cross-attention does not take) in the middle of a generation.
public enum PipelineCompatibility {
    public static func check(folder: String, unet: UNet2DConditionConfig, vae: AutoencoderKLConfig,
                             textEncoders: [(name: String, config: CLIPTextConfig, tokenizer: CLIPTokenizer)]) throws {
        func fail(_ problem: String) -> ModelFolderError {
            ModelFolderError("\(folder): the components do not fit together: \(problem). The folder mixes models; restore it from one model's source.")
        }
        guard vae.latentChannels == unet.inChannels, vae.latentChannels == unet.outChannels else {
            throw fail("vae/config.json latent_channels \(vae.latentChannels) but unet/config.json in_channels \(unet.inChannels), out_channels \(unet.outChannels)")
        }
        for (name, config, tokenizer) in textEncoders {
            guard tokenizer.vocabularySize <= config.vocabSize else {
                throw fail("the tokenizer for \(name) has \(tokenizer.vocabularySize) tokens but \(name)/config.json vocab_size is \(config.vocabSize)")
            }
            guard tokenizer.maxLength <= config.maxPositionEmbeddings else {
                throw fail("the tokenizer for \(name) pads to \(tokenizer.maxLength) tokens but \(name)/config.json max_position_embeddings is \(config.maxPositionEmbeddings)")
            }
        }
        let width = textEncoders.map(\.config.hiddenSize).reduce(0, +)
        if let bad = unet.crossDimPerBlock.first(where: { $0 != width }) {
            throw fail("unet/config.json cross_attention_dim \(bad) but the text encoders' hidden sizes add up to \(width)")
        }
        if unet.additionEmbedType == "text_time", let pooled = textEncoders.last?.config.projectionDim,
           let a = unet.additionTimeEmbedDim, let p = unet.projectionClassEmbeddingsInputDim, p != pooled + 6 * a {
            throw fail("unet/config.json projection_class_embeddings_input_dim \(p) but the last text encoder's projection_dim \(pooled) + 6 · addition_time_embed_dim \(a) is \(pooled + 6 * a)")
        }
    }
}
