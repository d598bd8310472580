import Foundation
import KoalaModels
import KoalaTensor

/// What a DreamBooth run trains: the tensors the optimizer updates, how a checkpoint
/// saves them and how `--resume` puts them back.
public protocol TrainedWeights: AnyObject {
    /// The trainable tensors, in the optimizer's fixed order.
    var parameters: [Tensor] { get }
    /// Dropout on (training) or off (evaluation, validation images).
    var training: Bool { get set }
    /// Sets the dropout masks of the next forward pass (see `LoRANetwork.reseedDropout`).
    func reseedDropout(_ seed: UInt64)
    /// Writes the weights of the checkpoint tagged `tag` (`step000100`) into `directory`
    /// and names the written files in `state`.
    func save(tag: String, into directory: URL, state: inout TrainingCheckpointState) throws
    /// Restores the weights a checkpoint's `state` names, from `directory`.
    func load(_ state: TrainingCheckpointState, from directory: URL) throws
}

/// LoRA adapters: the U-Net's, plus both text encoders' when they are trained too. A
/// checkpoint is one LoRA file per format holding every component's adapters.
public final class LoRAWeights: TrainedWeights {
    /// `unet` first, then `text_encoder`, `text_encoder_2` when present.
    public let networks: [LoRANetwork]
    public let format: TrainingRecipe.CheckpointFormat

    public init(networks: [LoRANetwork], format: TrainingRecipe.CheckpointFormat) {
        precondition(!networks.isEmpty, "LoRAWeights: no networks")
        self.networks = networks
        self.format = format
    }

    public var parameters: [Tensor] { networks.flatMap(\.parameters) }

    public var training: Bool {
        get { networks[0].training }
        set { for n in networks { n.training = newValue } }
    }

    public func reseedDropout(_ seed: UInt64) {
        // Each component gets its own masks; the U-Net's stay what a U-Net-only run draws.
        for (i, n) in networks.enumerated() { n.reseedDropout(i == 0 ? seed : seed &+ UInt64(i) &* 0x2545_F491_4F6C_DD1D) }
    }

    public func save(tag: String, into directory: URL, state: inout TrainingCheckpointState) throws {
        if format != .kohya {
            state.loraFile = "lora-\(tag).safetensors"
            try DurableWrite.file(directory.appendingPathComponent(state.loraFile!)) { try LoRAFile(networks).write(to: $0.path, format: .diffusers) }
        }
        if format != .diffusers {
            state.kohyaFile = "lora-\(tag).kohya.safetensors"
            try DurableWrite.file(directory.appendingPathComponent(state.kohyaFile!)) { try LoRAFile(networks).write(to: $0.path, format: .kohya) }
        }
    }

    public func load(_ state: TrainingCheckpointState, from directory: URL) throws {
        guard let file = state.loraFile ?? state.kohyaFile else {
            throw TrainingError("the checkpoint of step \(state.step) names no LoRA file; it was not saved by a LoRA run")
        }
        try LoRAFile.load(directory.appendingPathComponent(file).path, into: networks)
    }
}

/// Full fine-tuning: every U-Net parameter is trained. A checkpoint is a diffusers
/// `unet` folder (`config.json` + `diffusion_pytorch_model.safetensors`, float32) that
/// `UNet2DConditionModel.from_pretrained` loads and `generate --subject` draws with.
public final class FullUNetWeights: TrainedWeights {
    public let unet: UNet2DConditionModel
    /// The base model's `unet/config.json`, copied into every checkpoint unchanged.
    private let configJSON: Data
    private let named: [(String, Tensor)]

    /// The name of the weights file inside a checkpoint folder.
    public static let weightsFile = "diffusion_pytorch_model.safetensors"

    /// Makes every parameter of `unet` trainable.
    public init(unet: UNet2DConditionModel, configJSON: Data) {
        self.unet = unet
        self.configJSON = configJSON
        named = unet.namedParameters()
        for (name, p) in named {
            precondition(p.isContiguous, "FullUNetWeights: \(name) is not contiguous; optimizers update parameters in place")
            p.requiresGrad = true
        }
    }

    public var parameters: [Tensor] { named.map(\.1) }

    public var training: Bool = true  // the U-Net has no dropout of its own

    public func reseedDropout(_ seed: UInt64) {}

    /// The checkpoint folder of `tag`.
    public static func folderName(_ tag: String) -> String { "unet-\(tag)" }

    /// Built as a temporary folder and renamed into place (`DurableWrite.file`), so a
    /// crash never leaves a half-written checkpoint under the final name; a folder left
    /// by a run killed before its state file is replaced. Tensors are streamed to disk
    /// from the live parameters (no copy of the weights).
    public func save(tag: String, into directory: URL, state: inout TrainingCheckpointState) throws {
        let name = Self.folderName(tag)
        try DurableWrite.file(directory.appendingPathComponent(name)) { tmp in
            try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: false)
            try configJSON.write(to: tmp.appendingPathComponent("config.json"))
            try SafeTensors.write(Dictionary(uniqueKeysWithValues: named), to: tmp.appendingPathComponent(Self.weightsFile).path,
                                  metadata: ["format": "pt"])
        }
        state.unetFolder = name
    }

    /// Reads the checkpoint's tensors one at a time straight into the parameters, after
    /// checking every name and shape, so no second copy of the U-Net is ever held.
    public func load(_ state: TrainingCheckpointState, from directory: URL) throws {
        guard let folder = state.unetFolder else {
            throw TrainingError("the checkpoint of step \(state.step) names no unet folder; it was not saved by a full fine-tuning run")
        }
        let path = directory.appendingPathComponent(folder).appendingPathComponent(Self.weightsFile).path
        let file = try SafeTensorsFile(path: path)
        for (name, p) in named {
            guard let entry = file.entries[name] else {
                throw TrainingError("\(path) has no tensor \(name): it does not belong to this base model")
            }
            guard entry.shape == p.shape else {
                throw TrainingError("\(path): \(name) has shape \(entry.shape), the model expects \(p.shape)")
            }
        }
        guard file.entries.count == named.count else {
            throw TrainingError("\(path) holds \(file.entries.count) tensors, the U-Net has \(named.count): it does not belong to this base model")
        }
        try noGrad { for (name, p) in named { p.assign(try file.tensor(name)) } }
    }
}
