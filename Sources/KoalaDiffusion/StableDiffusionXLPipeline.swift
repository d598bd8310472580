import Foundation
import KoalaModels
import KoalaTensor

/// The components of an SDXL-family text-to-image pipeline (KOALA-700M, KOALA-1B,
/// SDXL), loaded from or written to a diffusers folder.
public final class StableDiffusionXLPipeline {
    public let unet: UNet2DConditionModel
    public let vae: AutoencoderKL
    public let textEncoder: CLIPTextModel
    public let textEncoder2: CLIPTextModel
    public let tokenizer: CLIPTokenizer
    public let tokenizer2: CLIPTokenizer
    public let schedulerConfig: SchedulerConfig
    /// model_index.json's `force_zeros_for_empty_prompt`: with no negative prompt, the
    /// unconditional embeddings are zeros instead of the encoded empty text.
    public var forceZerosForEmptyPrompt = true

    public init(unet: UNet2DConditionModel, vae: AutoencoderKL, textEncoder: CLIPTextModel, textEncoder2: CLIPTextModel,
                tokenizer: CLIPTokenizer, tokenizer2: CLIPTokenizer, schedulerConfig: SchedulerConfig) {
        self.unet = unet; self.vae = vae
        self.textEncoder = textEncoder; self.textEncoder2 = textEncoder2
        self.tokenizer = tokenizer; self.tokenizer2 = tokenizer2
        self.schedulerConfig = schedulerConfig
    }

    /// Loads every component of the diffusers folder at `path`. `variant` picks
    /// `*.<variant>.safetensors` (e.g. "fp16"); by default the plain weights, or the
    /// fp16 ones when they are all there is. 16-bit weights are converted to float32.
    public static func load(from path: String, variant: String? = nil) throws -> StableDiffusionXLPipeline {
        let folder = try PipelineFolder(path: path)
        let pipeline = StableDiffusionXLPipeline(
            unet: try loadUNet(folder, variant: variant),
            vae: try loadVAE(folder, variant: variant),
            textEncoder: try loadTextEncoder(folder, "text_encoder", variant: variant),
            textEncoder2: try loadTextEncoder(folder, "text_encoder_2", variant: variant),
            tokenizer: try CLIPTokenizer(directory: folder.directory("tokenizer")),
            tokenizer2: try CLIPTokenizer(directory: folder.directory("tokenizer_2")),
            schedulerConfig: try loadSchedulerConfig(folder))
        try PipelineCompatibility.check(folder: path, unet: pipeline.unet.config, vae: pipeline.vae.config, textEncoders: [
            ("text_encoder", pipeline.textEncoder.config, pipeline.tokenizer), ("text_encoder_2", pipeline.textEncoder2.config, pipeline.tokenizer2)])
        pipeline.forceZerosForEmptyPrompt = forceZerosFlag(folder)
        return pipeline
    }

    /// diffusers' default is true when model_index.json does not say.
    private static func forceZerosFlag(_ folder: PipelineFolder) -> Bool {
        let url = folder.root.appendingPathComponent("model_index.json")
        guard let data = try? Data(contentsOf: url),
              let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let flag = index["force_zeros_for_empty_prompt"] as? Bool else { return true }
        return flag
    }

    public static func loadUNet(_ folder: PipelineFolder, variant: String? = nil) throws -> UNet2DConditionModel {
        try loadModel(folder, "unet", variant) { (c: UNet2DConditionConfig) in
            try c.validate()
            return UNet2DConditionModel(config: c, init: .uninitialized())
        }
    }

    public static func loadVAE(_ folder: PipelineFolder, variant: String? = nil) throws -> AutoencoderKL {
        try loadModel(folder, "vae", variant) { (c: AutoencoderKLConfig) in
            try c.validate()
            return AutoencoderKL(config: c, init: .uninitialized())
        }
    }

    /// The model `make` builds of the component's config, with the component's weights
    /// loaded, failing with every missing, unexpected and mis-shaped key listed. Buffers
    /// that transformers saves but computes itself (`position_ids`) are not parameters
    /// and are skipped.
    private static func loadModel<Config: Decodable, M: Module>(_ folder: PipelineFolder, _ component: String, _ variant: String?,
                                                              _ make: (Config) throws -> M) throws -> M {
        let model = try make(try folder.config(Config.self, component))
        let sd = try folder.stateDict(component, variant: variant)
        let keys = sd.keys.filter { !$0.hasSuffix("position_ids") }
        let report: LoadReport
        do { report = try model.load(keys: Set(keys), sd.tensor) } catch let r as LoadReport {
            throw ModelFolderError("\(folder.root.path)/\(component): the weights do not fit the config:\n\(r)")
        }
        guard report.isExact else {
            throw ModelFolderError("\(folder.root.path)/\(component): the weights do not match the model described by config.json:\n\(report)")
        }
        return model
    }

    public static func loadTextEncoder(_ folder: PipelineFolder, _ component: String, variant: String? = nil) throws -> CLIPTextModel {
        let withProjection = folder.components[component]?.className == "CLIPTextModelWithProjection"
        return try loadModel(folder, component, variant) { (c: CLIPTextConfig) in
            CLIPTextModel(config: c, withProjection: withProjection, init: .uninitialized())
        }
    }

    public static func loadSchedulerConfig(_ folder: PipelineFolder) throws -> SchedulerConfig {
        let url = try folder.directory("scheduler").appendingPathComponent("scheduler_config.json")
        do { return try SchedulerConfig(contentsOf: url) } catch let e as SchedulerConfigError {
            throw ModelFolderError("\(url.path): \(e.description)")
        } catch {
            throw ModelFolderError("\(url.path) cannot be read: \(error.localizedDescription)")
        }
    }

    // MARK: writing (`model init`)

    /// Writes a complete diffusers folder with seeded random weights for `preset`,
    /// loadable by `StableDiffusionXLPipeline.from_pretrained`. The folder is built
    /// under a temporary name and renamed into place, so an interrupted run leaves
    /// nothing half-written at `path`.
    public static func initialize(preset: PipelinePreset, seed: UInt64, at path: String,
                                  dtype: SafeTensorsDType = .F32, progress: (String) -> Void = { _ in }) throws {
        let fm = FileManager.default
        let root = URL(fileURLWithPath: path)
        guard !fm.fileExists(atPath: root.path) else {
            throw ModelFolderError("\(path) already exists; choose a new folder or remove it first", problem: .outputExists)
        }
        let parent = root.deletingLastPathComponent()
        guard fm.fileExists(atPath: parent.path) else {
            throw ModelFolderError("cannot create \(path): the folder \(parent.path) does not exist")
        }
        let tmp = parent.appendingPathComponent(".\(root.lastPathComponent).partial-\(getpid())")
        try? fm.removeItem(at: tmp)
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
            try writeComponents(preset: preset, seed: seed, to: tmp, dtype: dtype, progress: progress)
            try fm.moveItem(at: tmp, to: root)
        } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
    }

    private static func writeComponents(preset: PipelinePreset, seed: UInt64, to root: URL, dtype: SafeTensorsDType,
                                        progress: (String) -> Void) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        func write(_ data: Data, _ relative: String) throws {
            let url = root.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url)
        }
        func weights(_ module: any Module, _ relative: String) throws {
            let tensors = Dictionary(uniqueKeysWithValues: module.namedParameters())
            try SafeTensors.write(tensors, to: root.appendingPathComponent(relative).path, dtype: dtype, metadata: ["format": "pt"])
        }
        let suffix = dtype == .F32 ? "" : ".fp16"
        precondition(dtype != .BF16, "bf16 checkpoints are read, not written")
        let index: [String: Any] = [
            "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1",
            "force_zeros_for_empty_prompt": true, "add_watermarker": NSNull(),
            "feature_extractor": [NSNull(), NSNull()], "image_encoder": [NSNull(), NSNull()],
            "scheduler": ["diffusers", preset.scheduler.className ?? "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        ]
        try write(JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys]), "model_index.json")
        try write(enc.encode(preset.scheduler), "scheduler/scheduler_config.json")
        try CLIPTokenizer.writeVocabulary(to: root.appendingPathComponent("tokenizer"), padToken: "<|endoftext|>")
        try CLIPTokenizer.writeVocabulary(to: root.appendingPathComponent("tokenizer_2"), padToken: "!")

        // Each component gets its own seed stream so adding one never changes another.
        progress("text_encoder")
        try write(preset.textEncoder.transformersJSON(withProjection: false), "text_encoder/config.json")
        try weights(CLIPTextModel(config: preset.textEncoder, withProjection: false, init: ParameterInitializer(seed: seed &+ 1)),
                    "text_encoder/model\(suffix).safetensors")
        progress("text_encoder_2")
        try write(preset.textEncoder2.transformersJSON(withProjection: true), "text_encoder_2/config.json")
        try weights(CLIPTextModel(config: preset.textEncoder2, withProjection: true, init: ParameterInitializer(seed: seed &+ 2)),
                    "text_encoder_2/model\(suffix).safetensors")
        progress("vae")
        try write(enc.encode(preset.vae), "vae/config.json")
        try weights(AutoencoderKL(config: preset.vae, init: ParameterInitializer(seed: seed &+ 3)),
                    "vae/diffusion_pytorch_model\(suffix).safetensors")
        progress("unet")
        var unetJSON = try JSONSerialization.jsonObject(with: enc.encode(preset.unet)) as! [String: Any]
        unetJSON["_class_name"] = "UNet2DConditionModel"
        unetJSON["_diffusers_version"] = "0.42.1"
        try write(JSONSerialization.data(withJSONObject: unetJSON, options: [.prettyPrinted, .sortedKeys]), "unet/config.json")
        try weights(UNet2DConditionModel(config: preset.unet, init: ParameterInitializer(seed: seed &+ 4)),
                    "unet/diffusion_pytorch_model\(suffix).safetensors")
    }
}
