import ArgumentParser
import Foundation
import KoalaDiffusion
import KoalaModels
import KoalaTensor

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
        abstract: "Write a complete diffusers folder with random weights for a preset.",
        discussion: """
            Presets: \(PipelinePreset.names.joined(separator: ", ")). The weights are random: \
            a model made this way draws noise, not pictures. `tiny` is for tests and the demo; \
            the full-size presets give real architectures (for benchmarks) — for real images \
            supply a real KOALA diffusers folder.
            """
    )

    @Option(help: "Preset: \(PipelinePreset.names.joined(separator: ", ")).")
    var preset: String

    @Option(help: "Folder to create (must not exist).")
    var out: String

    @Option(help: "Seed for the random weights.")
    var seed: UInt64 = 0

    @Option(help: "Weight file precision: fp32, or fp16 (written as *.fp16.safetensors).")
    var dtype: String = "fp32"

    func validate() throws {
        guard PipelinePreset.names.contains(preset) else {
            throw ValidationError("unknown preset '\(preset)'; choose one of \(PipelinePreset.names.joined(separator: ", "))")
        }
        guard ["fp32", "fp16"].contains(dtype) else { throw ValidationError("--dtype must be fp32 or fp16, not '\(dtype)'") }
    }

    func run() throws {
        let p = try PipelinePreset.named(preset)
        print("creating \(preset) pipeline with random weights (seed \(seed)) at \(out)")
        try StableDiffusionXLPipeline.initialize(preset: p, seed: seed, at: out, dtype: dtype == "fp16" ? .F16 : .F32) {
            print("  writing \($0)…")
        }
        print("done: \(out) (random weights — for tests and benchmarks, not pictures)")
    }
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
}

struct ModelInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a model folder's components, parameter counts, dtypes and memory."
    )

    @Argument(help: "The diffusers folder (holding model_index.json).")
    var directory: String

    @Option(help: "Weight variant to inspect (e.g. fp16); default: what exists.")
    var variant: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        let folder = try PipelineFolder(path: directory)
        var infos: [ComponentInfo] = []
        for name in folder.components.keys.sorted() {
            let (library, className) = folder.components[name]!
            var info = ComponentInfo(name: name, library: library, className: className)
            if ["unet", "vae", "text_encoder", "text_encoder_2"].contains(name) {
                let sd = try folder.stateDict(name, variant: variant)
                var params = 0, bytes = 0
                for f in sd.files {
                    for e in f.entries.values {
                        let n = e.shape.reduce(1, *)
                        params += n
                        bytes += n * e.dtype.byteSize
                    }
                }
                info.parameters = params
                info.dtypes = sd.dtypeCounts
                info.bytesOnDisk = bytes
                info.float32Bytes = params * 4
                info.files = sd.files.map { ($0.path as NSString).lastPathComponent }
            }
            infos.append(info)
        }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(infos), as: UTF8.self))
            return
        }
        print("\(directory) — \(folder.pipelineClass.isEmpty ? "diffusers pipeline" : folder.pipelineClass)")
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
