import ArgumentParser
import Foundation
import KoalaApp
import KoalaDiffusion
import KoalaImageIO
import KoalaModels
import KoalaStore
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
    var scheduler = "dpm-solver++"

    @Flag(help: "Use Karras sigmas (dpm-solver++ and euler).")
    var karras = false

    @Option(help: "Timestep spacing: \(TimestepSpacing.allCases.map(\.rawValue).joined(separator: ", ")); default: the model's scheduler_config.json (KOALA-Lightning samples with trailing).")
    var timestepSpacing: String?

    @Option(help: "Seed for the initial noise.")
    var seed: UInt64 = 0

    @Option(help: "Image width in pixels (a multiple of the model's size step, 32 for KOALA/SDXL; at most 4096, and what memory allows; default: the model's native size).")
    var width: Int?

    @Option(help: "Image height in pixels (as --width; default: the model's native size).")
    var height: Int?

    @Option(help: "Number of images (at most 10000; drawn and written one at a time).")
    var count = 1

    @Option(help: "Noise source: torch (default; same noise as torch.Generator().manual_seed(seed)) or native.")
    var rng = "torch"

    @Option(help: "VAE decoding in tiles, as diffusers' enable_vae_tiling(): auto (only when decoding the image whole would not fit in the available memory), on, or off (whole, as diffusers by default).")
    var vaeTiling = VAETiling.auto

    @Option(help: ArgumentHelp("Start from this initial noise (safetensors with tensor `latents`) instead of --seed.", valueName: "file"))
    var latents: String?

    @Option(help: ArgumentHelp("Also write the final denoised latents (before VAE decoding) here.", valueName: "file"))
    var saveLatents: String?

    @Option(help: ArgumentHelp("Apply this LoRA (safetensors from diffusers/PEFT or kohya's sd-scripts), merged into the weights.", valueName: "file"))
    var lora: String?

    @Option(help: "LoRA strength (diffusers' fuse_lora lora_scale; applies to the U-Net and both text encoders).")
    var loraScale: Float = 1

    @Option(help: "GEMM precision: auto (bf16 where the CPU has AVX512_BF16 or AMX, else fp32), fp32, or bf16 (frozen weights held in bf16, GEMM inputs rounded to bf16 with float32 accumulation, as torch.autocast; on other CPUs emulated: same numbers, slower than fp32).")
    var precision = "auto"

    @Option(help: ArgumentHelp("Output image (.png, or .jpg/.jpeg for JPEG); default koalabooth.png, or with --subject the subject's generations folder in the data directory.", valueName: "path"))
    var output: String?

    @Option(help: "JPEG quality 1…100.")
    var jpegQuality = 95

    func validate() throws {
        // NaN passes every range check written as a comparison and draws an all-black picture.
        for (flag, value) in [("--guidance", guidance), ("--guidance-rescale", guidanceRescale), ("--lora-scale", loraScale)]
        where !value.isFinite {
            throw ValidationError("\(flag) must be a finite number, got \(value)")
        }
        guard SchedulerKind(rawValue: scheduler) != nil else {
            throw ValidationError("unknown --scheduler '\(scheduler)'; choose one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if karras && scheduler == SchedulerKind.ddim.rawValue {
            throw ValidationError("--karras does not apply to ddim (DDIM steps through the training timesteps); use it with dpm-solver++ or euler")
        }
        guard RNGKind(rawValue: rng) != nil else { throw ValidationError("--rng must be torch or native, not '\(rng)'") }
        if let t = timestepSpacing, TimestepSpacing(rawValue: t) == nil {
            throw ValidationError("unknown --timestep-spacing '\(t)'; choose one of \(TimestepSpacing.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard count <= GenerationLimits.maxCount else {
            throw ValidationError("--count \(count) is over the limit of \(GenerationLimits.maxCount) images per command; run generate several times (with different --seed) for more")
        }
        guard (0...1).contains(guidanceRescale) else { throw ValidationError("--guidance-rescale must be between 0 and 1") }
        if lora == nil && subject == nil && loraScale != 1 { throw ValidationError("--lora-scale needs --lora FILE or --subject") }
        if model == nil && subject == nil { throw ValidationError("give --model DIR (or --subject NAME to use a trained subject)") }
        if runID != nil && subject == nil { throw ValidationError("--run needs --subject") }
        if subject != nil && lora != nil { throw ValidationError("--lora and --subject cannot be combined: a subject brings its own weights") }
        do { _ = try Precision(parsing: precision) } catch { throw ValidationError("--precision: \(error)") }
        guard (1...100).contains(jpegQuality) else { throw ValidationError("--jpeg-quality must be between 1 and 100") }
        for (name, value) in [("--width", width), ("--height", height)] {
            if let v = value, v <= 0 || v % 8 != 0 {
                throw ValidationError("\(name) must be a positive multiple of 8, got \(v) (try \(max(8, v / 8 * 8)))")
            }
            if let v = value, v > GenerationLimits.maxSide {
                throw ValidationError("\(name) \(v) is over the limit of \(GenerationLimits.maxSide) pixels (SDXL-family models draw 1024 natively)")
            }
        }
    }

    /// Output paths: the given one, or NAME-1.ext … NAME-K.ext for several images.
    static func outputPaths(_ output: String, count: Int) -> [String] {
        guard count > 1 else { return [output] }
        let url = URL(fileURLWithPath: output)
        let ext = url.pathExtension, base = url.deletingPathExtension().path
        return (1...count).map { ext.isEmpty ? "\(base)-\($0)" : "\(base)-\($0).\(ext)" }
    }

    func run() throws {
        let trained = try subject.map(resolveSubject)
        let model = self.model ?? trained!.run.baseModelPath
        let prompt = trained.map { $0.substitute(self.prompt) } ?? self.prompt
        let negativePrompt = trained.map { t in self.negativePrompt.map(t.substitute) } ?? self.negativePrompt
        let output = try self.output ?? trained.map { try $0.defaultOutput() } ?? "koalabooth.png"
        let jpeg = ["jpg", "jpeg"].contains(URL(fileURLWithPath: output).pathExtension.lowercased())
        let outDir = URL(fileURLWithPath: output).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: outDir) else {
            throw CLIError("cannot write \(output): the folder \(outDir) does not exist; create it first")
        }
        if let saveLatents {
            let dir = URL(fileURLWithPath: saveLatents).deletingLastPathComponent().path
            guard FileManager.default.fileExists(atPath: dir) else {
                throw CLIError("cannot write \(saveLatents): the folder \(dir) does not exist; create it first")
            }
        }

        var p = GenerationParameters(prompt: prompt)
        p.negativePrompt = negativePrompt
        p.steps = steps
        p.guidance = guidance
        p.guidanceRescale = guidanceRescale
        p.scheduler = SchedulerKind(rawValue: scheduler)!
        p.karras = karras
        p.timestepSpacing = timestepSpacing.flatMap(TimestepSpacing.init(rawValue:))
        p.seed = seed
        p.width = width
        p.height = height
        p.count = count
        p.rng = RNGKind(rawValue: rng)!

        guard FileManager.default.fileExists(atPath: model) else {
            throw CLIError("model folder \(model) does not exist; pass a diffusers folder, or make a test one with `koalabooth model init --preset tiny --out DIR`")
        }
        if let lora, !FileManager.default.fileExists(atPath: lora) {
            throw CLIError("--lora \(lora) does not exist")
        }
        Output.note("loading \(model)…")
        let pipeline = try StableDiffusionXLPipeline.load(from: model, variant: variant)
        if let trained { try trained.apply(to: pipeline, scale: loraScale) }
        if let lora {
            do {
                let applied = try pipeline.applyLoRA(path: lora, scale: loraScale)
                Output.note("applied LoRA \(lora) (\(applied.format.rawValue) format, \(applied.updates.count) weights, scale \(loraScale))")
            } catch let e as LoRAError { throw CLIError(e.description) }
        }
        // bf16 mode: after every merge (merges write the float32 weights).
        Precision.compute = try Precision(parsing: precision).resolved()
        if Precision.compute == .bf16 {
            let freed = [pipeline.unet as any Module, pipeline.textEncoder, pipeline.textEncoder2, pipeline.vae]
                .reduce(0) { $0 + $1.holdFrozenGEMMWeightsInBF16() }
            Output.note(String(format: "precision bf16: weights held in bf16 (%.1f MiB freed)", Double(freed) / 1048576))
        }
        let size = (width: width ?? pipeline.defaultSize.width, height: height ?? pipeline.defaultSize.height)
        let shape = try pipeline.latentShape(width: size.width, height: size.height, count: count)
        let latentBytes = Double(shape.dropFirst().reduce(1, *) * MemoryLayout<Float>.size)
        do {
            p.vaeTiling = try pipeline.checkRequest(width: size.width, height: size.height, count: count, guidance: guidance, vaeTiling: vaeTiling,
                                                    keptBytesPerImage: saveLatents == nil ? 0 : latentBytes, available: SystemMemory.availableBytes())
        } catch let e as GenerationError { throw CLIError(e.description) }
        try Self.checkDiskSpace(folder: outDir, bytes: Double(count) * GenerationFootprint.outputBytes(width: size.width, height: size.height),
                                what: "\(count) image\(count == 1 ? "" : "s") of \(size.width)x\(size.height)")
        let noise = try latents.map { try Self.readLatents($0, expected: shape) }

        // Images are drawn, written and recorded one at a time: memory does not grow with
        // --count, and a failure keeps the images finished before it.
        let saved = saveLatents == nil ? nil : Tensor(empty: shape)
        let paths = Self.outputPaths(output, count: count)
        let meta = metadata(p, size, model, schedulerConfig: pipeline.schedulerConfig, trained: trained)
        let text = meta.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
        do {
            try pipeline.generateEach(p, noise: noise, progress: { index, prog in
                let perStep = prog.elapsed / Double(prog.step)
                let eta = perStep * Double(prog.total - prog.step)
                let filled = prog.step * 20 / prog.total
                let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled)
                let which = count > 1 ? "image \(index + 1)/\(count) " : ""
                Output.note(String(format: "%@[%@] step %d/%d  %.2f s/step  ETA %.0f s", which, bar, prog.step, prog.total, perStep, eta))
            }) { i, latents, decoded in
                if let saved {
                    let n = saved.count / count
                    (saved.data + i * n).update(from: latents.contiguous().data, count: n)
                }
                let pixels = decoded.contiguous()
                let values = Array(UnsafeBufferPointer(start: pixels.data, count: pixels.count))
                let image = RGBImage(planarFloats: values, width: size.width, height: size.height)
                let path = paths[i]
                if jpeg {
                    try image.writeJPEG(path: path, quality: jpegQuality)
                } else {
                    var chunks = text
                    if count > 1 { chunks.append((key: "index", value: "\(i + 1) of \(count)")) }
                    try image.writePNG(path: path, text: chunks)
                }
                print("wrote \(path)")
                try trained?.record(p, size: size, imagePath: path)
            }
        } catch let e as NonFiniteLatentsError { throw CLIError(e.description) }
        if let saveLatents, let saved {
            try SafeTensors.write(["latents": saved], to: saveLatents, metadata: meta)
            print("wrote \(saveLatents)")
        }
    }

    /// Refuses to start what the output folder's free space cannot hold.
    static func checkDiskSpace(folder: String, bytes: Double, what: String) throws {
        var fs = statvfs()
        guard statvfs(folder, &fs) == 0 else { return }
        let free = Double(fs.f_bavail) * Double(fs.f_frsize)
        guard bytes <= free else {
            let gib = { (b: Double) in String(format: "%.1f GiB", b / 1_073_741_824) }
            throw CLIError("\(what) can take up to \(gib(bytes)), but \(folder) has \(gib(free)) free; draw fewer images (--count) or write them elsewhere (--output)")
        }
    }

    /// Every parameter that decides the image, as PNG text chunks / safetensors metadata,
    /// plus A1111's `parameters` text.
    func metadata(_ p: GenerationParameters, _ size: (width: Int, height: Int), _ model: String,
                  schedulerConfig: SchedulerConfig, trained: TrainedSubject?) -> [String: String] {
        var m = p.textChunks(width: size.width, height: size.height, model: model, base: schedulerConfig)
        if let latents { m["seed"] = nil; m["latents"] = latents }
        if let lora { m["lora"] = lora; m["lora_scale"] = "\(loraScale)" }
        if let subject { m["subject"] = subject }
        m["vae_tiling"] = p.vaeTiling.rawValue  // as resolved by checkRequest: on or off
        var info = Infotext(parameters: p, schedulerConfig: p.schedulerConfig(schedulerConfig),
                            width: size.width, height: size.height, modelPath: model)
        info.seeded = latents == nil
        info.loras = (lora.map { [Infotext.LoRA.file($0, scale: loraScale)] } ?? []) + (trained?.infotextLoRA(scale: loraScale).map { [$0] } ?? [])
        m["parameters"] = info.text
        return m
    }

    /// Looks up `--subject` (and `--run`) in the store: the checkpoint to draw with.
    func resolveSubject(_ name: String) throws -> TrainedSubject {
        guard let store = try global.openExistingStore() else {
            throw CLIError("no subject named \(name): the data directory \(global.homeURL.path) has no database yet; create one with `koalabooth subject create`")
        }
        let subject = try store.requireSubject(named: name)
        let chosen: (run: TrainingRun, checkpoint: Checkpoint)
        if let runID {
            guard let r = try store.run(id: runID), r.subjectId == subject.id else {
                throw CLIError("subject \(name) has no training run \(runID); `koalabooth runs list --subject \(name)` shows its runs")
            }
            guard let c = try store.checkpoints(runID: runID).max(by: { $0.step < $1.step }) else {
                throw CLIError("training run \(runID) has no checkpoint yet")
            }
            chosen = (r, c)
        } else {
            guard let latest = try store.latestFinishedCheckpoint(subjectID: subject.id!) else {
                throw CLIError("subject \(name) has no finished training run with a checkpoint; train it first (`koalabooth train \(name) …`), or pick a run with --run")
            }
            chosen = latest
        }
        return TrainedSubject(store: store, subject: subject, run: chosen.run, checkpoint: chosen.checkpoint)
    }


    static func readLatents(_ path: String, expected: [Int]) throws -> Tensor {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIError("--latents \(path) does not exist")
        }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(path: path, maxBytes: 1 << 30) } catch {
            throw CLIError("--latents \(path) is not a readable safetensors file: \(error)")
        }
        let t: Tensor
        do { t = try file.tensor("latents") } catch {
            throw CLIError("--latents \(path) has no tensor named 'latents' (found: \(file.entries.keys.sorted().joined(separator: ", ")))")
        }
        guard t.shape == expected else {
            let fmt = { (s: [Int]) in s.map(String.init).joined(separator: "x") }
            throw CLIError("--latents \(path) holds \(fmt(t.shape)) latents, but this size and --count need \(fmt(expected)) (batch x 4 x height/8 x width/8)")
        }
        if let bad = t.firstNonFinite() {
            throw CLIError("--latents \(path) holds \(bad.value) at element \(bad.index): starting latents must be finite numbers (NaN or infinity would draw a black picture)")
        }
        return t
    }
}

/// A subject and the checkpoint `generate --subject` draws with.
struct TrainedSubject {
    let store: SubjectStore
    let subject: Subject
    let run: TrainingRun
    let checkpoint: Checkpoint

    func substitute(_ text: String) -> String {
        text.replacingOccurrences(of: "{token}", with: subject.token).replacingOccurrences(of: "{class}", with: subject.classNoun)
    }

    func defaultOutput() throws -> String {
        let dir = store.generationDirectory(subjectID: subject.id!)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let stamp = Int(Date().timeIntervalSince1970 * 1000)
        return dir.appendingPathComponent("\(stamp).png").path
    }

    /// The LoRA checkpoint as the `parameters` chunk names it (nil for a full fine-tune).
    func infotextLoRA(scale: Float) -> Infotext.LoRA? {
        checkpoint.kind == .lora ? .file(store.url(forRelativePath: checkpoint.path).path, scale: scale) : nil
    }

    /// Merges a LoRA checkpoint, or loads a full fine-tune's U-Net weights.
    func apply(to pipeline: StableDiffusionXLPipeline, scale: Float) throws {
        let path = store.url(forRelativePath: checkpoint.path).path
        Output.note("using \(subject.name)'s run \(run.id!) checkpoint at step \(checkpoint.step) (\(checkpoint.kind.rawValue))")
        switch checkpoint.kind {
        case .lora:
            do { try pipeline.applyLoRA(path: path, scale: scale) } catch let e as LoRAError { throw CLIError(e.description) }
        case .full:
            // The store records the weights file inside the checkpoint's `unet` folder.
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
            guard exists else { throw CLIError("checkpoint \(path) is missing; `koalabooth doctor` checks the data directory") }
            let folder = isDir.boolValue ? URL(fileURLWithPath: path) : URL(fileURLWithPath: path).deletingLastPathComponent()
            let sd = try StateDict.load(directory: folder, weightName: "diffusion_pytorch_model", variant: nil)
            let report = try pipeline.unet.load(keys: sd.keys, sd.tensor)
            guard report.isExact else { throw CLIError("checkpoint \(path) does not fit the base model's U-Net:\n\(report)") }
        }
    }

    /// Records an image written inside the data directory in the subject's history.
    func record(_ p: GenerationParameters, size: (width: Int, height: Int), imagePath: String) throws {
        guard let relative = try? store.relativePath(of: URL(fileURLWithPath: imagePath)) else {
            Output.note("not recorded in \(subject.name)'s history: \(imagePath) is outside the data directory")
            return
        }
        _ = try store.recordGeneration(Generation(subjectId: subject.id!, runId: run.id, checkpointId: checkpoint.id,
                                               prompt: p.prompt, negativePrompt: p.negativePrompt ?? "", seed: Int64(bitPattern: p.seed),
                                               steps: p.steps, scheduler: p.scheduler.rawValue, guidanceScale: Double(p.guidance),
                                               width: size.width, height: size.height, imagePath: relative))
    }
}

extension GenerationParameters {
    /// The parameters that decide an image, keyed as `generate`'s PNG text chunks (and
    /// training's validation images) carry them.
    /// `base` is the model's scheduler config.
    func textChunks(width: Int, height: Int, model: String, base: SchedulerConfig) -> [String: String] {
        [
            "prompt": prompt, "negative_prompt": negativePrompt ?? "", "seed": "\(seed)",
            "steps": "\(steps)", "scheduler": scheduler.rawValue, "karras": "\(karras)",
            "timestep_spacing": schedulerConfig(base).timestepSpacing.rawValue,
            "guidance": "\(guidance)", "guidance_rescale": "\(guidanceRescale)",
            "width": "\(width)", "height": "\(height)", "count": "\(count)",
            "rng": rng.rawValue, "model": model,
            "precision": Precision.compute.rawValue,  // the resolved one: fp32 or bf16
            "software": "\(Product.name) \(Product.version)",
        ]
    }
}

extension VAETiling: ExpressibleByArgument {}
