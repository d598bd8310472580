import Foundation
import KoalaDiffusion
import KoalaImageIO
import KoalaModels
import KoalaTensor

/// Where prior preservation (`[prior]`) keeps its class images, and who hears about
/// their generation.
public struct ClassImageRequest {
    /// The cache folder for this base model, class prompt and resolution; created when missing.
    public var directory: URL
    /// The class prompt with `{class}` filled in.
    public var prompt: String
    /// Called after each generated class image.
    public var progress: (ClassImageProgress) -> Void

    public init(directory: URL, prompt: String, progress: @escaping (ClassImageProgress) -> Void = { _ in }) {
        self.directory = directory
        self.prompt = prompt
        self.progress = progress
    }
}

/// One class image generated.
public struct ClassImageProgress: Sendable {
    /// Images generated so far in this call (1-based) and how many were missing.
    public let generated: Int
    public let missing: Int
    /// Class images wanted (`prior.num_class_images`).
    public let wanted: Int
    public let file: URL
    /// Seconds this image took, and the estimate for the rest.
    public let seconds: Double
    public let etaSeconds: Double
}

/// The class-image cache: `class-00000.png`, `class-00001.png`, … in the request's folder.
/// Image `i` is drawn by the base model from the class prompt with seed `train.seed + i`
/// (`train.rng`'s generator), DPM-Solver++ with `prior.generation_steps` steps and
/// `prior.generation_guidance`, so a missing image is regenerated the same.
public enum ClassImages {
    public static func fileName(_ index: Int) -> String { String(format: "class-%05d.png", index) }

    /// The first `recipe.prior.num_class_images` class images, generating the missing ones
    /// with `pipeline` at `side` x `side`.
    static func ensure(_ request: ClassImageRequest, recipe: TrainingRecipe, side: Int,
                       pipeline: StableDiffusionXLPipeline) throws -> [RGBImage] {
        let dir = request.directory
        let wanted = recipe.prior.numClassImages
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        DurableWrite.removeLeftovers(in: dir)
        let missing = (0..<wanted).filter { !FileManager.default.fileExists(atPath: dir.appendingPathComponent(fileName($0)).path) }
        var images: [Int: RGBImage] = [:]
        var spent = 0.0
        for (k, i) in missing.enumerated() {
            let began = Date()
            var p = GenerationParameters(prompt: request.prompt)
            p.steps = recipe.prior.generationSteps
            p.guidance = Float(recipe.prior.generationGuidance)
            p.scheduler = .dpmSolverPlusPlus
            p.seed = recipe.train.seed &+ UInt64(i)
            p.rng = recipe.train.rng == .torch ? .torch : .native
            p.width = side
            p.height = side
            let result = try pipeline.generate(p)
            let image = RGBImage(planarFloats: result.images.contiguous().toArray(), width: side, height: side)
            let url = dir.appendingPathComponent(fileName(i))
            try DurableWrite.file(url) { tmp in
                try image.writePNG(path: tmp.path, text: [("prompt", request.prompt), ("seed", "\(p.seed)"), ("steps", "\(p.steps)"),
                                                          ("guidance", "\(p.guidance)"), ("scheduler", "dpm-solver++")])
            }
            images[i] = image
            let seconds = Date().timeIntervalSince(began)
            spent += seconds
            request.progress(ClassImageProgress(generated: k + 1, missing: missing.count, wanted: wanted, file: url, seconds: seconds,
                                                etaSeconds: spent / Double(k + 1) * Double(missing.count - k - 1)))
        }
        return try (0..<wanted).map { i in
            if let image = images[i] { return image }
            return try RGBImage.load(path: dir.appendingPathComponent(fileName(i)).path)
        }
    }
}

/// Prior preservation's training data: the class images encoded for every bucket the
/// instance photos use (a micro-batch must be one shape), and the class prompt.
struct PriorPreservation {
    /// The class prompt (encoded by the trainer's `TrainingPromptEncoder`).
    let prompt: String
    let examples: [AspectBucket: EncodedExamples]
    let weight: Float

    /// Generates missing class images (square, at `data.resolution` rounded down to the
    /// model's `pixelMultiple`), then crops each one to every bucket in `buckets` the way
    /// photos are cropped (random crops from their own generator) and encodes it.
    init(recipe: TrainingRecipe, request: ClassImageRequest, buckets: Set<AspectBucket>, pixelMultiple: Int,
         pipeline: StableDiffusionXLPipeline) throws {
        let side = max(pixelMultiple, recipe.data.resolution / pixelMultiple * pixelMultiple)
        let photos = try ClassImages.ensure(request, recipe: recipe, side: side, pipeline: pipeline)
        var rng = RandomGenerator(seed: recipe.train.seed ^ 0xC1A5_5C1A_55C1_A55C)
        var examples: [AspectBucket: EncodedExamples] = [:]
        for bucket in buckets.sorted(by: { ($0.width, $0.height) < ($1.width, $1.height) }) {
            let images = photos.map { TrainingImage(photo: $0, bucket: bucket, centerCrop: recipe.data.centerCrop, using: &rng) }
            examples[bucket] = EncodedExamples(images, vae: pipeline.vae, sampling: recipe.data.latents)
        }
        prompt = request.prompt
        self.examples = examples
        weight = Float(recipe.prior.priorLossWeight)
    }

    /// diffusers' DreamBooth loss on one U-Net batch whose first `instanceCount` rows are
    /// instance examples and the rest class examples: mean instance MSE +
    /// `priorWeight` × mean class MSE. `perExample` holds each row's mean squared error;
    /// `weights` (Min-SNR-γ, one per row) scale each row's error first when given.
    static func loss(perExample: Tensor, weights: [Float]?, instanceCount n: Int, priorWeight: Float) -> Tensor {
        let b = perExample.shape[0]
        precondition(perExample.shape.count == 1 && n >= 1 && n <= b, "prior loss: \(n) instance rows of \(perExample.shape)")
        let weighted = weights.map { perExample * Tensor(shape: [b], values: $0) } ?? perExample
        let instance = n == b ? weighted.mean() : weighted.slice(0, 0, n).mean()
        guard n < b else { return instance }
        return instance + weighted.slice(0, n, b).mean() * priorWeight
    }
}
