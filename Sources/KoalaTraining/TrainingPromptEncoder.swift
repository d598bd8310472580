import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

/// SDXL conditioning of one prompt: the two encoders' penultimate hidden states side by
/// side [1, 77, D1 + D2] and the pooled, projected `text_encoder_2` output [1, P].
public struct TrainingPromptEmbeddings {
    public let hidden: Tensor
    public let pooled: Tensor
}

/// The prompts' text conditioning during training.
///
/// With frozen text encoders every prompt is encoded once at start and the encoders are
/// released (only the small embeddings stay). With `model.lora.text_encoders`, LoRA
/// adapters sit on both encoders' attention projections (`q_proj`, `k_proj`, `v_proj`,
/// `out_proj`, as diffusers' `train_dreambooth_lora_sdxl.py --train_text_encoder`) and
/// each call encodes the prompt again with gradients flowing into the adapters.
public final class TrainingPromptEncoder {
    private var cache: [String: TrainingPromptEmbeddings] = [:]
    /// Both tokenizers' ids per prompt, when the encoders are trained: the same few
    /// prompts come back every step.
    private var tokenIDs: [String: (one: [Int], two: [Int])] = [:]
    private let encoders: (one: CLIPTextModel, two: CLIPTextModel, tokenizer: CLIPTokenizer, tokenizer2: CLIPTokenizer)?
    /// The `text_encoder` and `text_encoder_2` adapters (empty when the encoders are frozen).
    public let loraNetworks: [LoRANetwork]

    /// Caches `prompts` with `pipeline`'s frozen encoders, or (with `lora`) attaches
    /// adapters to both encoders and keeps them. `seed` seeds the adapters' A matrices
    /// (`text_encoder` from `seed + 1`, `text_encoder_2` from `seed + 2`).
    public init(pipeline: StableDiffusionXLPipeline, prompts: [String], lora: LoRAConfig?, seed: UInt64) throws {
        guard let lora else {
            encoders = nil
            loraNetworks = []
            for p in Set(prompts) {
                let e = pipeline.encodePrompt([p])
                cache[p] = TrainingPromptEmbeddings(hidden: e.hiddenStates, pooled: e.pooled)
            }
            return
        }
        let config = LoRAConfig(rank: lora.rank, alpha: lora.alpha, dropout: lora.dropout, targetModules: LoRAConfig.textEncoderTargets)
        loraNetworks = [
            try LoRANetwork(attachingTo: pipeline.textEncoder, component: "text_encoder", config: config, seed: seed &+ 1),
            try LoRANetwork(attachingTo: pipeline.textEncoder2, component: "text_encoder_2", config: config, seed: seed &+ 2),
        ]
        encoders = (pipeline.textEncoder, pipeline.textEncoder2, pipeline.tokenizer, pipeline.tokenizer2)
    }

    /// Whether the encoders are trained (prompts are encoded on every call).
    public var trainsTextEncoders: Bool { encoders != nil }

    /// The conditioning of `prompt`: cached, or encoded now through the adapted encoders
    /// (recording the graph when gradients are on). A cached encoder only knows the
    /// prompts it was created with.
    public func embeddings(for prompt: String) -> TrainingPromptEmbeddings {
        guard let e = encoders else {
            guard let cached = cache[prompt] else { preconditionFailure("TrainingPromptEncoder: prompt \"\(prompt)\" was not cached at init") }
            return cached
        }
        let ids = tokenIDs[prompt] ?? (e.tokenizer.tokenize(prompt), e.tokenizer2.tokenize(prompt))
        tokenIDs[prompt] = ids
        return Self.encode(ids: ids.one, e.one, ids2: ids.two, e.two)
    }

    /// SDXL's prompt encoding as `StableDiffusionXLPipeline.encode_prompt` does it, with
    /// gradients (the pipeline's own `encodePrompt` runs without).
    static func encode(ids: [Int], _ one: CLIPTextModel, ids2: [Int], _ two: CLIPTextModel) -> TrainingPromptEmbeddings {
        let out1 = one([ids])
        let out2 = two([ids2])
        guard let pooled = out2.textEmbeds else { preconditionFailure("text_encoder_2 must be a CLIPTextModelWithProjection") }
        let h1 = out1.hiddenStates[out1.hiddenStates.count - 2]
        let h2 = out2.hiddenStates[out2.hiddenStates.count - 2]
        return TrainingPromptEmbeddings(hidden: Tensor.cat([h1, h2], dim: 2), pooled: pooled)
    }
}
