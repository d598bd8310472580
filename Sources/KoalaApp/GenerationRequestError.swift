import Foundation
import KoalaDiffusion

/// Why a generation request was refused or could not be carried out. Descriptions say
/// what is wrong in the request's terms; the CLI names its flags and commands instead.
public enum GenerationRequestError: Error, Equatable, CustomStringConvertible {
    // The request itself (`GenerationRequest.validate`).
    case notFinite(GenerationRequest.Field, Float)
    case karrasWithDDIM
    case tooFewSteps
    case tooFewImages
    case tooManyImages(Int)
    case guidanceRescaleOutOfRange
    case loraScaleWithoutLoRA
    case noModel
    case runWithoutSubject
    case loraWithSubject
    case jpegQualityOutOfRange
    case sideNotMultipleOf8(GenerationRequest.Field, Int)
    case sideOverLimit(GenerationRequest.Field, Int)

    // The subject's checkpoint.
    /// The data directory `home` has no database, so no subject.
    case noDataDirectory(subject: String, home: String)
    case unknownRun(subject: String, runID: Int64)
    case runHasNoCheckpoint(runID: Int64)
    case noFinishedCheckpoint(subject: String)
    case checkpointMissing(path: String)
    /// A full fine-tune's U-Net weights do not fit the base model (`report` lists the keys).
    case checkpointMismatch(path: String, report: String)

    // Files.
    /// No output path, and no subject whose generations folder would take the images.
    case noOutput
    case outputFolderMissing(path: String, folder: String)
    case modelMissing(path: String)
    case loraMissing(path: String)
    /// `count` images of `width`x`height` can take up to `bytes`, but `folder` has `free`.
    case notEnoughDiskSpace(count: Int, width: Int, height: Int, bytes: Double, folder: String, free: Double)

    // The starting latents file.
    case latentsMissing(path: String)
    case latentsUnreadable(path: String, reason: String)
    case latentsTensorMissing(path: String, found: [String])
    case latentsShape(path: String, found: [Int], expected: [Int])
    case latentsNotFinite(path: String, value: Float, index: Int)

    public var description: String {
        let fmt = { (s: [Int]) in s.map(String.init).joined(separator: "x") }
        switch self {
        case .notFinite(let field, let value): return "the \(field.rawValue) must be a finite number, got \(value)"
        case .karrasWithDDIM: return "Karras sigmas do not apply to ddim (DDIM steps through the training timesteps); use them with dpm-solver++ or euler"
        case .tooFewSteps: return "the step count must be at least 1"
        case .tooFewImages: return "the image count must be at least 1"
        case .tooManyImages(let n): return "\(n) images is over the limit of \(GenerationLimits.maxCount) per request; make several requests (with different seeds) for more"
        case .guidanceRescaleOutOfRange: return "the guidance rescale must be between 0 and 1"
        case .loraScaleWithoutLoRA: return "a LoRA scale needs a LoRA file or a subject"
        case .noModel: return "no model: give a model folder or a trained subject"
        case .runWithoutSubject: return "a training run can only be chosen with a subject"
        case .loraWithSubject: return "a LoRA file and a subject cannot be combined: a subject brings its own weights"
        case .jpegQualityOutOfRange: return "the JPEG quality must be between 1 and 100"
        case .sideNotMultipleOf8(let field, let v): return "the \(field.rawValue) must be a positive multiple of 8, got \(v) (try \(max(8, v / 8 * 8)))"
        case .sideOverLimit(let field, let v): return "the \(field.rawValue) \(v) is over the limit of \(GenerationLimits.maxSide) pixels (SDXL-family models draw 1024 natively)"
        case .noDataDirectory(let subject, let home): return "no subject named \(subject): the data directory \(home) has no database yet"
        case .unknownRun(let subject, let runID): return "subject \(subject) has no training run \(runID)"
        case .runHasNoCheckpoint(let runID): return "training run \(runID) has no checkpoint yet"
        case .noFinishedCheckpoint(let subject): return "subject \(subject) has no finished training run with a checkpoint; train it first, or pick a run"
        case .checkpointMissing(let path): return "checkpoint \(path) is missing; check the data directory"
        case .checkpointMismatch(let path, let report): return "checkpoint \(path) does not fit the base model's U-Net:\n\(report)"
        case .noOutput: return "no output path: give one (a subject's images go to its generations folder by default)"
        case .outputFolderMissing(let path, let folder): return "cannot write \(path): the folder \(folder) does not exist; create it first"
        case .modelMissing(let path): return "model folder \(path) does not exist; give a diffusers folder"
        case .loraMissing(let path): return "LoRA file \(path) does not exist"
        case .notEnoughDiskSpace(let count, let width, let height, let bytes, let folder, let free):
            return "\(Self.images(count, width, height)) can take up to \(Self.gib(bytes)), but \(folder) has \(Self.gib(free)) free; draw fewer images or write them elsewhere"
        case .latentsMissing(let path): return "latents file \(path) does not exist"
        case .latentsUnreadable(let path, let reason): return "latents file \(path) is not a readable safetensors file: \(reason)"
        case .latentsTensorMissing(let path, let found): return "latents file \(path) has no tensor named 'latents' (found: \(found.joined(separator: ", ")))"
        case .latentsShape(let path, let found, let expected): return "latents file \(path) holds \(fmt(found)) latents, but this size and count need \(fmt(expected)) (batch x 4 x height/8 x width/8)"
        case .latentsNotFinite(let path, let value, let index): return "latents file \(path) holds \(value) at element \(index): starting latents must be finite numbers (NaN or infinity would draw a black picture)"
        }
    }

    /// "3 images of 64x64".
    public static func images(_ count: Int, _ width: Int, _ height: Int) -> String {
        "\(count) image\(count == 1 ? "" : "s") of \(width)x\(height)"
    }

    public static func gib(_ bytes: Double) -> String { String(format: "%.1f GiB", bytes / 1_073_741_824) }
}
