import Foundation
import KoalaTraining

/// What a training run reports while it runs, in the order it happens.
public enum TrainingEvent: Sendable {
    /// A run of this subject left `queued` or `running` by a process that ended was
    /// marked `interrupted` before this one started.
    case abandonedRunMarked(runID: Int64, stepsDone: Int)
    /// A resume continues run `runID` from the checkpoint of `fromStep` (nil: it has no
    /// checkpoint yet and starts over).
    case resuming(runID: Int64, fromStep: Int?)
    /// The run is recorded and its photos prepared; the model loads next.
    case started(TrainingRunStart)
    /// Prior preservation's class images: the cache folder, how many are wanted, the prompt.
    case classImages(directory: URL, wanted: Int, prompt: String)
    /// A missing class image was drawn by the base model.
    case classImageGenerated(ClassImageProgress)
    /// Something the user should know (a recipe key the trainer approximates).
    case warning(String)
    /// The mean loss over the photos at fixed timesteps and noise (`evaluationLoss`),
    /// before and after training.
    case evaluationLoss(Double, afterTraining: Bool)
    /// Everything is loaded: the optimizer loop starts now; cancelling stops it at the
    /// next step boundary with a checkpoint.
    case optimizerLoopStarting
    /// A step done (every `train.log_every` steps, and the last).
    case step(TrainingProgress)
    /// A checkpoint was written and recorded; `file` is its LoRA file or U-Net folder.
    case checkpointSaved(step: Int, file: URL)
    /// `checkpoint.keep_last` retired the checkpoint of `step`: rows and files are gone.
    case checkpointRemoved(step: Int, keepLast: Int?)
    /// A validation image was written and recorded as a generation of the subject.
    case validationImage(step: Int, file: URL, prompt: String)
    /// The run reached `train.max_steps`.
    case finished(runID: Int64, steps: Int, elapsedSeconds: Double)
    /// The run stopped on request after `step`, with a checkpoint of it; resume continues it.
    case interrupted(runID: Int64, step: Int)
    /// The run stopped on an error and was marked `failed` with `message`.
    case failed(runID: Int64, message: String)
}

/// What a run trains, as `started` reports it.
public struct TrainingRunStart: Sendable {
    public let runID: Int64
    public let photoCount: Int
    public let totalSteps: Int
    public let resolution: Int
    /// "LoRA rank 4", "LoRA rank 4 (U-Net and text encoders)" or "full U-Net".
    public let trained: String
    /// The aspect buckets in use and their photo counts: "64x64 ×2, 128x32 ×1".
    public let buckets: String
}

/// Where a run's events go.
///
/// A closure, called synchronously on the thread that trains, in order, before the work
/// the event announces continues. The trainer is synchronous CPU work, so a caller on
/// another thread or task needs no callback ordering of its own: the CLI prints each
/// event at once; an HTTP service runs the use case in a background job and forwards
/// into an `AsyncStream<TrainingEvent>.Continuation` (`yield` is synchronous and
/// thread-safe), which its handlers iterate. A sink must not block for long: the step
/// waits for it.
public typealias TrainingEventSink = @Sendable (TrainingEvent) -> Void
