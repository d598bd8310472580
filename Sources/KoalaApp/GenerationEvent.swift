import KoalaDiffusion
import KoalaStore

/// What a generation reports while it runs, in order: loading, the weights applied, then
/// per image its denoising steps and the file written.
public enum GenerationEvent: Sendable {
    case loadingModel(path: String)
    /// The subject's checkpoint the images are drawn with.
    case usingCheckpoint(subject: String, runID: Int64, step: Int, kind: CheckpointKind)
    /// A LoRA file merged into the weights: its key format, how many weights it changed.
    case appliedLoRA(path: String, format: String, weights: Int, scale: Float)
    /// bf16 mode holds the frozen GEMM weights in bf16, freeing this many bytes.
    case weightsHeldInBF16(freedBytes: Int)
    /// One denoising step of image `index` (from 0) of `count`.
    case step(index: Int, count: Int, progress: GenerationProgress)
    /// Image `index` is written at `path`.
    case wroteImage(index: Int, path: String)
    /// The subject's image just written is in its history.
    case recorded(Generation)
    /// The subject's image at `path` is outside the data directory, so it is not recorded.
    case notRecorded(subject: String, path: String)
    case wroteLatents(path: String)
}

/// What a finished generation wrote.
public struct GenerationOutcome: Sendable {
    public var imagePaths: [String]
    /// The history entries of a subject's images (those inside the data directory).
    public var recorded: [Generation]
    public var latentsPath: String?
}
