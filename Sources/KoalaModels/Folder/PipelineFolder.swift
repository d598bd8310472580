import Foundation
import KoalaTensor

/// A diffusers pipeline folder: `model_index.json` naming its components, one
/// subfolder per component (`unet/`, `vae/`, `text_encoder/`, …).
public struct PipelineFolder: Sendable {
    public let root: URL
    /// Component name → (library, class), as written in model_index.json.
    public let components: [String: (library: String, className: String)]
    /// The pipeline class (`StableDiffusionXLPipeline`).
    public let pipelineClass: String

    public init(path: String) throws {
        root = URL(fileURLWithPath: path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw ModelFolderError("model folder \(path) does not exist; a diffusers model folder is the one holding model_index.json.",
                                   problem: .folderMissing)
        }
        let indexURL = root.appendingPathComponent("model_index.json")
        guard FileManager.default.fileExists(atPath: indexURL.path) else {
            throw ModelFolderError("\(path) is not a diffusers pipeline folder: model_index.json is missing.", problem: .notAPipelineFolder)
        }
        let data = try readJSONFile(indexURL)
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelFolderError("\(indexURL.path) is not valid JSON; restore it from the model's source.")
        }
        pipelineClass = json["_class_name"] as? String ?? ""
        var comps: [String: (String, String)] = [:]
        for (k, v) in json where !k.hasPrefix("_") {
            if let pair = v as? [Any], pair.count == 2, let lib = pair[0] as? String, let cls = pair[1] as? String {
                comps[k] = (lib, cls)
            }
        }
        components = comps
    }

    /// The subfolder of a component, checked to exist.
    public func directory(_ component: String) throws -> URL {
        let dir = root.appendingPathComponent(component)
        guard components[component] != nil else {
            throw ModelFolderError("\(root.path)/model_index.json lists no '\(component)' component (it has: \(components.keys.sorted().joined(separator: ", ")))")
        }
        guard FileManager.default.fileExists(atPath: dir.path) else {
            throw ModelFolderError("\(dir.path) is missing: model_index.json lists '\(component)' but the folder is not there; the model folder is incomplete.")
        }
        return dir
    }

    /// Decodes `<component>/<file>` (default `config.json`).
    public func config<T: Decodable>(_ type: T.Type, _ component: String, file: String = "config.json") throws -> T {
        let url = try directory(component).appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ModelFolderError("\(url.path) is missing; the model folder is incomplete.")
        }
        let data = try readJSONFile(url)
        do { return try JSONDecoder().decode(T.self, from: data) } catch let e as ModelConfigError {
            throw ModelFolderError("\(url.path): \(e.description)")
        } catch {
            throw ModelFolderError("\(url.path) cannot be read: \(error)")
        }
    }

    /// The component's weights: diffusers names them `diffusion_pytorch_model`,
    /// transformers `model`.
    public func stateDict(_ component: String, variant: String? = nil) throws -> StateDict {
        let dir = try directory(component)
        let weightName = components[component]?.library == "transformers" ? "model" : "diffusion_pytorch_model"
        return try StateDict.load(directory: dir, weightName: weightName, variant: variant)
    }
}

/// A model folder's JSON file (model_index.json, a config, a shard index), read with
/// BoundedFile's guards.
public func readJSONFile(_ url: URL) throws -> Data {
    do { return try BoundedFile.read(url.path, limit: BoundedFile.textLimit) } catch let e as BoundedFile.Error {
        throw ModelFolderError("\(url.path) cannot be read: \(e.reason)")
    }
}

/// A config value KoalaBooth does not support, naming the key.
public struct ModelConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(key: String, value: String, supported: String) {
        description = "config key '\(key)' has value \(value), which KoalaBooth does not support (supported: \(supported))"
    }
}
