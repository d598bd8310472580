import Foundation
import KoalaDiffusion
import KoalaTensor

/// One `generate` request: what to draw (`parameters`), with which weights, and where to
/// write it. Paths are file-system paths of the machine that runs it.
public struct GenerationRequest: Sendable {
    /// Prompt, sampler, size, seed, count. With `subject`, `{token}` and `{class}` in the
    /// prompts stand for the subject's token and class noun.
    public var parameters: GenerationParameters
    /// The diffusers model folder; nil with `subject`: the base model of its run.
    public var model: String?
    /// Weight variant to load (e.g. fp16); nil: what the folder has.
    public var variant: String?
    /// Draw a trained subject with its latest finished checkpoint (or `runID`'s newest),
    /// and record the images written inside the data directory in its history.
    public var subject: String?
    public var runID: Int64?
    /// A LoRA file merged into the weights.
    public var lora: String?
    /// LoRA strength (diffusers' `fuse_lora` `lora_scale`), for `lora` or the subject's LoRA.
    public var loraScale: Float = 1
    public var precision = Precision.auto
    /// Initial noise (safetensors with tensor `latents`) instead of the seed's.
    public var latents: String?
    /// Also write the final denoised latents here.
    public var saveLatents: String?
    /// The image path (`.png`, or `.jpg`/`.jpeg` for JPEG); with several images
    /// NAME-1.ext … NAME-K.ext. nil with `subject`: a new file in its generations folder.
    public var output: String?
    public var jpegQuality = 95

    public init(prompt: String) { parameters = GenerationParameters(prompt: prompt) }

    /// The options a number can make unusable, named in `GenerationRequestError`.
    public enum Field: String, Sendable {
        case guidance, guidanceRescale, loraScale, width, height
    }

    /// Refuses a request that cannot be drawn as asked, before anything is loaded
    /// (the size and memory bounds of the model are checked once it is loaded).
    public func validate() throws {
        let p = parameters
        // NaN passes every range check written as a comparison and draws an all-black picture.
        for (field, value): (Field, Float) in [(.guidance, p.guidance), (.guidanceRescale, p.guidanceRescale), (.loraScale, loraScale)]
        where !value.isFinite {
            throw GenerationRequestError.notFinite(field, value)
        }
        if p.karras && p.scheduler == .ddim { throw GenerationRequestError.karrasWithDDIM }
        guard p.steps >= 1 else { throw GenerationRequestError.tooFewSteps }
        guard p.count >= 1 else { throw GenerationRequestError.tooFewImages }
        guard p.count <= GenerationLimits.maxCount else { throw GenerationRequestError.tooManyImages(p.count) }
        guard (0...1).contains(p.guidanceRescale) else { throw GenerationRequestError.guidanceRescaleOutOfRange }
        if lora == nil && subject == nil && loraScale != 1 { throw GenerationRequestError.loraScaleWithoutLoRA }
        if model == nil && subject == nil { throw GenerationRequestError.noModel }
        if runID != nil && subject == nil { throw GenerationRequestError.runWithoutSubject }
        if subject != nil && lora != nil { throw GenerationRequestError.loraWithSubject }
        guard (1...100).contains(jpegQuality) else { throw GenerationRequestError.jpegQualityOutOfRange }
        for (field, value): (Field, Int?) in [(.width, p.width), (.height, p.height)] {
            if let v = value, v <= 0 || v % 8 != 0 { throw GenerationRequestError.sideNotMultipleOf8(field, v) }
            if let v = value, v > GenerationLimits.maxSide { throw GenerationRequestError.sideOverLimit(field, v) }
        }
    }

    /// Output paths: `output`, or NAME-1.ext … NAME-K.ext for several images.
    public static func outputPaths(_ output: String, count: Int) -> [String] {
        guard count > 1 else { return [output] }
        let url = URL(fileURLWithPath: output)
        let ext = url.pathExtension, base = url.deletingPathExtension().path
        return (1...count).map { ext.isEmpty ? "\(base)-\($0)" : "\(base)-\($0).\(ext)" }
    }
}
