import ArgumentParser
import Foundation
import KoalaApp
import KoalaDiffusion
import KoalaTensor

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Draw images from a text prompt with an SDXL-family model (KOALA, SDXL).",
        discussion: """
            The result matches diffusers' StableDiffusionXLPipeline given the same inputs. \
            With the default --rng torch, --seed S draws the initial noise that \
            `generator=torch.Generator().manual_seed(S)` draws in a diffusers script, so \
            seeds from Python scripts and papers reproduce here; --rng native uses \
            KoalaBooth's own generator instead. --latents starts from a saved noise \
            tensor (named `latents`, shape COUNTx4xH/8xW/8, unscaled standard normal), which \
            reproduces any implementation's start exactly.

            PNG files carry every parameter in text chunks; an output path ending in \
            .jpg/.jpeg writes JPEG. With --count K > 1 the files are NAME-1.png … NAME-K.png.
            """
    )

    @Option(help: ArgumentHelp("The diffusers model folder (holding model_index.json); with --subject, defaults to the base model of the subject's run.", valueName: "dir"))
    var model: String?

    @Option(help: ArgumentHelp("Weight variant to load (e.g. fp16); default: what the folder has.", valueName: "name"))
    var variant: String?

    @Option(help: "Draw a trained subject: uses its latest finished checkpoint (or --run's), substitutes {token} and {class} in the prompts, and records the images in the subject's history.")
    var subject: String?

    @Option(name: .customLong("run"), help: "With --subject: use this training run's newest checkpoint instead of the latest finished run.")
    var runID: Int64?

    @OptionGroup var global: GlobalOptions

    @Option(help: "What to draw.")
    var prompt: String

    @Option(help: "What to steer away from. Without it the unconditional input is what the model asks for (zeros for SDXL).")
    var negativePrompt: String?

    @Option(help: "Denoising steps.")
    var steps = 25

    @Option(help: "Classifier-free guidance scale (1 or less: no guidance).")
    var guidance: Float = 7.5

    @Option(help: "Guidance rescale factor 0…1 (arXiv 2305.08891); 0 = off.")
    var guidanceRescale: Float = 0

    @Option(help: "Sampler: \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scheduler = Choice(SchedulerKind.dpmSolverPlusPlus)

    @Flag(help: "Use Karras sigmas (dpm-solver++ and euler).")
    var karras = false

    @Option(help: "Timestep spacing: \(TimestepSpacing.allCases.map(\.rawValue).joined(separator: ", ")); default: the model's scheduler_config.json (KOALA-Lightning samples with trailing).")
    var timestepSpacing: Choice<TimestepSpacing>?

    @Option(help: "Seed for the initial noise.")
    var seed: UInt64 = 0

    @Option(help: "Image width in pixels (a multiple of the model's size step, 32 for KOALA/SDXL; at most 4096, and what memory allows; default: the model's native size).")
    var width: Int?

    @Option(help: "Image height in pixels (as --width; default: the model's native size).")
    var height: Int?

    @Option(help: "Number of images (at most 10000; drawn and written one at a time).")
    var count = 1

    @Option(help: "Noise source: torch (default; same noise as torch.Generator().manual_seed(seed)) or native.")
    var rng = Choice(RNGKind.torch)

    @Option(help: "VAE decoding in tiles, as diffusers' enable_vae_tiling(): auto (only when decoding the image whole would not fit in the available memory), on, or off (whole, as diffusers by default).")
    var vaeTiling = Choice(VAETiling.auto)

    @Option(help: ArgumentHelp("Start from this initial noise (safetensors with tensor `latents`) instead of --seed.", valueName: "file"))
    var latents: String?

    @Option(help: ArgumentHelp("Also write the final denoised latents (before VAE decoding) here.", valueName: "file"))
    var saveLatents: String?

    @Option(help: ArgumentHelp("Apply this LoRA (safetensors from diffusers/PEFT or kohya's sd-scripts), merged into the weights.", valueName: "file"))
    var lora: String?

    @Option(help: "LoRA strength (diffusers' fuse_lora lora_scale; applies to the U-Net and both text encoders).")
    var loraScale: Float = 1

    @Option(help: "GEMM precision: auto (bf16 where the CPU has AVX512_BF16 or AMX, else fp32), fp32, or bf16 (frozen weights held in bf16, GEMM inputs rounded to bf16 with float32 accumulation, as torch.autocast; on other CPUs emulated: same numbers, slower than fp32).")
    var precision = Choice(Precision.auto)

    @Option(help: ArgumentHelp("Output image (.png, or .jpg/.jpeg for JPEG); default koalabooth.png, or with --subject the subject's generations folder in the data directory.", valueName: "path"))
    var output: String?

    @Option(help: "JPEG quality 1…100.")
    var jpegQuality = 95

    func validate() throws {
        // The spellings first (they are not the request's concern), then the request's own checks.
        guard scheduler.value != nil else {
            throw ValidationError("unknown --scheduler '\(scheduler.spelling)'; choose one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard rng.value != nil else { throw ValidationError("--rng must be torch or native, not '\(rng.spelling)'") }
        guard vaeTiling.value != nil else {
            throw ValidationError("unknown --vae-tiling '\(vaeTiling.spelling)'; choose one of \(VAETiling.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let t = timestepSpacing, t.value == nil {
            throw ValidationError("unknown --timestep-spacing '\(t.spelling)'; choose one of \(TimestepSpacing.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        do { _ = try Precision(parsing: precision.spelling) } catch { throw ValidationError("--precision: \(error)") }
        do { try request().validate() } catch let e as GenerationRequestError { throw ValidationError(ErrorWording.text(e)) }
    }

    /// The options as a generation request (the spellings checked by `validate`).
    func request() -> GenerationRequest {
        var r = GenerationRequest(prompt: prompt)
        r.parameters.negativePrompt = negativePrompt
        r.parameters.steps = steps
        r.parameters.guidance = guidance
        r.parameters.guidanceRescale = guidanceRescale
        r.parameters.scheduler = scheduler.value!
        r.parameters.karras = karras
        r.parameters.timestepSpacing = timestepSpacing?.value
        r.parameters.seed = seed
        r.parameters.width = width
        r.parameters.height = height
        r.parameters.count = count
        r.parameters.rng = rng.value!
        r.parameters.vaeTiling = vaeTiling.value!
        r.model = model
        r.variant = variant
        r.subject = subject
        r.runID = runID
        r.lora = lora
        r.loraScale = loraScale
        r.precision = precision.value!
        r.latents = latents
        r.saveLatents = saveLatents
        // A subject's images default to its generations folder.
        r.output = output ?? (subject == nil ? "koalabooth.png" : nil)
        r.jpegQuality = jpegQuality
        return r
    }

    func run() throws {
        try GenerationUseCase(location: global.location).run(request(), events: Self.report)
    }

    /// Progress on stderr, the files written on stdout.
    static func report(_ event: GenerationEvent) {
        switch event {
        case .loadingModel(let path):
            Output.note("loading \(path)…")
        case .usingCheckpoint(let subject, let runID, let step, let kind):
            Output.note("using \(subject)'s run \(runID) checkpoint at step \(step) (\(kind.rawValue))")
        case .appliedLoRA(let path, let format, let weights, let scale):
            Output.note("applied LoRA \(path) (\(format) format, \(weights) weights, scale \(scale))")
        case .weightsHeldInBF16(let freed):
            Output.note(String(format: "precision bf16: weights held in bf16 (%.1f MiB freed)", Double(freed) / 1048576))
        case .step(let index, let count, let prog):
            let perStep = prog.elapsed / Double(prog.step)
            let eta = perStep * Double(prog.total - prog.step)
            let filled = prog.step * 20 / prog.total
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled)
            let which = count > 1 ? "image \(index + 1)/\(count) " : ""
            Output.note(String(format: "%@[%@] step %d/%d  %.2f s/step  ETA %.0f s", which, bar, prog.step, prog.total, perStep, eta))
        case .wroteImage(_, let path), .wroteLatents(let path):
            print("wrote \(path)")
        case .recorded:
            break
        case .notRecorded(let subject, let path):
            Output.note("not recorded in \(subject)'s history: \(path) is outside the data directory")
        }
    }
}
