import ArgumentParser
import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor
import KoalaTraining

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Create and inspect diffusers model folders.",
        subcommands: [ModelInit.self, ModelInfo.self]
    )
}

struct ModelInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a diffusers folder: random weights for a preset, or a KOALA student initialised from a teacher.",
        discussion: """
            --preset: a complete pipeline folder with random weights. Presets: \(PipelinePreset.names.joined(separator: ", ")). \
            A model made this way draws noise, not pictures. `tiny` is for tests and the demo; the full-size presets give \
            real architectures (for benchmarks) — for real images supply a real KOALA diffusers folder.

            --student with --from-teacher: the KOALA paper's student initialisation, written as a diffusers U-Net folder \
            (config.json + diffusion_pytorch_model.safetensors, float32). The student (\(StudentInitialization.presets.joined(separator: ", ")), \
            or a U-Net config.json) gets every parameter from the teacher's at the same block location: down blocks' first \
            resnet/attention pairs, up blocks' first and last pairs, the first transformer blocks of each deeper stack \
            (SA-bottom), the mid block when the student has one, everything else as it is. The teacher is an SDXL-structured \
            U-Net: a diffusers pipeline folder or its unet/ folder.
            """
    )

    @Option(help: "Preset: \(PipelinePreset.names.joined(separator: ", ")).")
    var preset: String?

    @Option(help: ArgumentHelp("Student U-Net: \(StudentInitialization.presets.joined(separator: ", ")), or a U-Net config.json (needs --from-teacher).",
                               valueName: "name-or-config.json"))
    var student: String?

    @Option(help: ArgumentHelp("Teacher to initialise --student from: an SDXL diffusers folder or its unet/ folder.", valueName: "dir"))
    var fromTeacher: String?

    @Option(help: "Folder to create (must not exist).")
    var out: String

    @Option(help: "Seed for the random weights (--preset only; default 0).")
    var seed: UInt64?

    @Option(help: "Weight file precision (--preset only): fp32, or fp16 (written as *.fp16.safetensors).")
    var dtype: Choice<WeightFileType>?

    func validate() throws {
        switch (preset, student) {
        case (nil, nil): throw ValidationError("give --preset NAME (random weights) or --student NAME --from-teacher DIR (a KOALA student)")
        case (_?, _?): throw ValidationError("--preset and --student exclude each other: --preset writes random weights, --student copies a teacher's")
        case (let p?, nil):
            guard PipelinePreset.names.contains(p) else {
                throw ValidationError("unknown preset '\(p)'; choose one of \(PipelinePreset.names.joined(separator: ", "))")
            }
            if fromTeacher != nil { throw ValidationError("--from-teacher goes with --student, not --preset") }
            if let dtype, dtype.value == nil { throw ValidationError("--dtype must be fp32 or fp16, not '\(dtype.spelling)'") }
        case (nil, _?):
            if fromTeacher == nil { throw ValidationError("--student needs --from-teacher DIR: the teacher whose weights it starts from") }
            if seed != nil { throw ValidationError("--seed goes with --preset: a student's weights are the teacher's, not random") }
            if dtype != nil { throw ValidationError("--dtype goes with --preset: a student is written in float32, like full fine-tuning checkpoints") }
        }
    }

    func run() throws {
        if let student, let fromTeacher { return try initStudent(student, fromTeacher) }
        let name = preset!, seed = seed ?? 0
        let p = try PipelinePreset.named(name)
        print("creating \(name) pipeline with random weights (seed \(seed)) at \(out)")
        try StableDiffusionXLPipeline.initialize(preset: p, seed: seed, at: out, dtype: dtype?.value?.dtype ?? .F32) {
            print("  writing \($0)…")
        }
        print("done: \(out) (random weights — for tests and benchmarks, not pictures)")
    }

    private func initStudent(_ name: String, _ teacher: String) throws {
        let config = try Self.studentConfig(name)
        print("initialising a \(name) student from the teacher \(teacher)")
        let model = try StudentInitialization.write(config, fromTeacher: teacher, to: out)
        print("done: \(out) (U-Net, \(Format.count(model.parameterCount)) parameters, copied from the teacher)")
    }

    /// A `--student` value: a preset name, or a path to a U-Net config.json.
    static func studentConfig(_ name: String) throws -> UNet2DConditionConfig {
        do { return try StudentInitialization.config(named: name) } catch let e as StudentInitializationError {
            throw ValidationError(e.description)
        }
    }
}

/// The weight file types `model init --dtype` writes.
enum WeightFileType: String, Spelled {
    case fp32, fp16

    var dtype: SafeTensorsDType { self == .fp16 ? .F16 : .F32 }
}

/// What `model info` reports for one component.
struct ComponentInfo: Codable {
    let name: String
    let library: String
    let className: String
    var parameters: Int? = nil
    var dtypes: [String: Int]? = nil
    var bytesOnDisk: Int? = nil
    var float32Bytes: Int? = nil
    var files: [String]? = nil

    /// Fills in the counts and sizes of the component's weights.
    mutating func measure(_ sd: StateDict) {
        var params = 0, bytes = 0
        for f in sd.files {
            for e in f.entries.values {
                let n = e.shape.reduce(1, *)
                params += n
                bytes += n * e.dtype.byteSize
            }
        }
        parameters = params
        dtypes = sd.dtypeCounts
        bytesOnDisk = bytes
        float32Bytes = params * 4
        files = sd.files.map { ($0.path as NSString).lastPathComponent }
    }
}

struct ModelInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a model (or U-Net) folder's components, parameter counts, dtypes and memory."
    )

    @Argument(help: "The diffusers folder (holding model_index.json), or a U-Net folder (config.json + weights).")
    var directory: String

    @Option(help: "Weight variant to inspect (e.g. fp16); default: what exists.")
    var variant: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        if let unet = try unetFolder(directory) { return try report([unet], title: "\(directory) — UNet2DConditionModel folder") }
        let folder = try PipelineFolder(path: directory)
        var infos: [ComponentInfo] = []
        for name in folder.components.keys.sorted() {
            let (library, className) = folder.components[name]!
            var info = ComponentInfo(name: name, library: library, className: className)
            if ["unet", "vae", "text_encoder", "text_encoder_2"].contains(name) {
                info.measure(try folder.stateDict(name, variant: variant))
            }
            infos.append(info)
        }
        try report(infos, title: "\(directory) — \(folder.pipelineClass.isEmpty ? "diffusers pipeline" : folder.pipelineClass)")
    }

    /// A lone U-Net folder (config.json naming UNet2DConditionModel, no model_index.json),
    /// as `model init --student` and full fine-tuning checkpoints write it; nil otherwise.
    func unetFolder(_ directory: String) throws -> ComponentInfo? {
        let root = URL(fileURLWithPath: directory)
        guard !FileManager.default.fileExists(atPath: root.appendingPathComponent("model_index.json").path),
              FileManager.default.fileExists(atPath: root.appendingPathComponent("config.json").path),
              let data = try? readJSONFile(root.appendingPathComponent("config.json")),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              json["_class_name"] as? String == "UNet2DConditionModel"
        else { return nil }
        var info = ComponentInfo(name: "unet", library: "diffusers", className: "UNet2DConditionModel")
        info.measure(try StateDict.load(directory: root, weightName: "diffusion_pytorch_model", variant: variant))
        return info
    }

    private func report(_ infos: [ComponentInfo], title: String) throws {
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(infos), as: UTF8.self))
            return
        }
        print(title)
        let rows = infos.map { i -> [String] in
            [i.name, i.className, i.parameters.map(Format.count) ?? "-",
             i.dtypes.map { $0.keys.sorted().joined(separator: "+") } ?? "-",
             i.bytesOnDisk.map(Format.bytes) ?? "-", i.float32Bytes.map(Format.bytes) ?? "-"]
        }
        Format.table(header: ["component", "class", "parameters", "dtype", "on disk", "fp32 memory"], rows: rows)
        let total = infos.compactMap(\.parameters).reduce(0, +)
        print("total parameters: \(Format.count(total))")
    }
}
