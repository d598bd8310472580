import ArgumentParser
import Foundation
import KoalaApp
import KoalaTensor
import KoalaTraining

/// `koalabooth distill`: KOALA's own method, a student U-Net distilled from a teacher.
struct DistillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distil an SDXL-structured teacher's U-Net into a KOALA student (the KOALA paper's method).",
        discussion: """
            The student (\(StudentInitialization.presets.joined(separator: ", ")), or a U-Net config.json) starts \
            from the teacher's weights (as `model init --student` writes it) and trains on the captioned images \
            of --data (name.txt beside name.jpg, or a metadata.jsonl with file_name and text) with the task, \
            output and feature losses of the recipe's [distill] table (recipes/README.md). The images and \
            captions are encoded once by the teacher's VAE and text encoders. Checkpoints, the recipe and \
            the student config go to OUT.run/, so that --resume continues a stopped run (Ctrl-C saves a \
            checkpoint) with the recipe it started with; at the end OUT is written whole: the teacher's \
            pipeline folder with the student U-Net, loadable by `koalabooth generate`, `koalabooth train` \
            and diffusers. A real distillation is long (the paper: 100K steps at batch 128 on four A100s).
            """
    )

    @Option(help: ArgumentHelp("The teacher: a diffusers pipeline folder (SDXL structure).", valueName: "dir"))
    var teacher: String

    @Option(help: ArgumentHelp("The student U-Net: \(StudentInitialization.presets.joined(separator: ", ")), or a U-Net config.json.",
                               valueName: "name-or-config.json"))
    var student: String

    @Option(help: ArgumentHelp("The captioned images (name.txt beside name.jpg, or metadata.jsonl).", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("The distillation recipe (TOML with a [distill] table); not needed with --resume.", valueName: "file"))
    var recipe: String?

    @Option(help: ArgumentHelp("The distilled pipeline folder to write (must not exist).", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Keep the last N images out of training and report the student's output gap to the teacher on them before and after.",
                               valueName: "n"))
    var holdout = 0

    @Flag(help: "Continue the run in OUT.run/ from its last checkpoint.")
    var resume = false

    func validate() throws {
        if !resume, recipe == nil { throw ValidationError("give --recipe FILE (for example recipes/tiny-distill.toml)") }
        if holdout < 0 { throw ValidationError("--holdout must be 0 or more images") }
    }

    func run() throws {
        let cancellation = TrainingCancellation()
        let stop = StopRequest(cancelling: cancellation)
        let request = DistillationRequest(teacherPath: teacher, student: student, dataPath: data, recipePath: recipe ?? "", outPath: out,
                                          holdout: holdout)
        let outcome = try DistillationRunner().run(request, resume: resume, cancellation: cancellation) { event in
            switch event {
            case .resuming(let step):
                if recipe != nil { Output.warn("--resume continues with the recipe the run started with; --recipe is ignored") }
                print(step.map { "resuming \(request.runDirectory.path) from step \($0)" }
                      ?? "\(request.runDirectory.path) has no checkpoint yet; starting it over")
            case .models(let t, let s, let precision):
                print("teacher U-Net \(Format.count(t)) parameters; student \(Format.count(s)) (initialised from the teacher); \(precision.rawValue)")
            case .encoded(let done, let total):
                if done == total || done % 50 == 0 { print("encoded \(done)/\(total) captioned images") }
            case .optimizerLoopStarting:
                stop.install()
            case .step(let p):
                let t = p.training
                print(String(format: "step %d/%d loss %.6f (task %.6f out %.6f feat %.6f) lr %.3g s/step %.3f",
                             t.step, t.totalSteps, t.loss, p.task, p.output, p.feature, t.learningRate, t.secondsPerStep)
                      + " eta \(Output.duration(t.etaSeconds)) peak-rss \(TrainCommand.megabytes(t.peakRSSBytes))")
            case .checkpointSaved(let step, let folder):
                print("checkpoint step \(step): \(folder.path)")
            case .validationImage(let step, let file, let prompt):
                print("validation step \(step): \(file.path) \"\(prompt)\"")
            case .finished(let out, let steps, let seconds):
                print("distilled \(steps) steps in \(Output.duration(seconds)): \(out.path) (checkpoints stay in \(request.runDirectory.path))")
            case .outputGap(let before, let after, let images, let samples):
                print(String(format: "relative output MSE on %d held-out images (%d noise/timestep draws): %.6f before, %.6f after (%.1f%%)",
                             images, samples, before, after, 100 * after / max(before, 1e-12)))
            case .interrupted(let step):
                Output.note("distillation interrupted after step \(step) (checkpoint saved); continue with the same command and --resume")
            }
            fflush(nil)
        }
        if case .interrupted = outcome { throw ExitCode(130) }
    }
}
