import Foundation
import KoalaTensor

/// Problems with a model folder, each naming the file and what to do about it.
public struct ModelFolderError: Error, CustomStringConvertible {
    /// The cases a caller words its own fix for (which option names the folder).
    public enum Problem: Sendable {
        case folderMissing, notAPipelineFolder, outputExists, other
    }

    public let description: String
    public let problem: Problem
    public init(_ description: String, problem: Problem = .other) {
        self.description = description
        self.problem = problem
    }
}

/// The tensors of one pipeline component, from a single safetensors file or from the
/// shards listed in a `*.safetensors.index.json`, read lazily.
public struct StateDict: Sendable {
    public let files: [SafeTensorsFile]
    private let owner: [String: Int]

    public var keys: Set<String> { Set(owner.keys) }

    public init(files: [SafeTensorsFile]) throws {
        var owner: [String: Int] = [:]
        for (i, f) in files.enumerated() {
            for k in f.entries.keys {
                if owner[k] != nil { throw ModelFolderError("tensor '\(k)' appears in two shards (\(files[owner[k]!].path), \(f.path))") }
                owner[k] = i
            }
        }
        self.files = files
        self.owner = owner
    }

    public func tensor(_ key: String) throws -> Tensor {
        guard let i = owner[key] else { throw ModelFolderError("no tensor '\(key)' in \(files.map(\.path).joined(separator: ", "))") }
        return try files[i].tensor(key)
    }

    /// The dtypes stored, with how many tensors use each ("F16": 1680).
    public var dtypeCounts: [String: Int] {
        var c: [String: Int] = [:]
        for f in files { for e in f.entries.values { c[e.dtype.rawValue, default: 0] += 1 } }
        return c
    }

    /// Loads `<weightName>[.<variant>].safetensors` (or its sharded index) from `directory`.
    /// With `variant` nil the plain file is preferred and a lone `fp16` variant is used
    /// when that is all there is.
    public static func load(directory: URL, weightName: String, variant: String?) throws -> StateDict {
        let fm = FileManager.default
        func candidates(_ v: String?) -> (single: URL, index: URL) {
            let suffix = v.map { ".\($0)" } ?? ""
            return (directory.appendingPathComponent("\(weightName)\(suffix).safetensors"),
                    directory.appendingPathComponent("\(weightName).safetensors.index\(suffix).json"))
        }
        let order: [String?] = variant.map { [$0] } ?? [nil, "fp16"]
        for v in order {
            let (single, index) = candidates(v)
            if fm.fileExists(atPath: single.path) { return try StateDict(files: [SafeTensorsFile(path: single.path)]) }
            if fm.fileExists(atPath: index.path) { return try loadSharded(index: index) }
        }
        let present = ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".json") }.sorted()
        let wanted = candidates(variant).single.lastPathComponent
        throw ModelFolderError("\(directory.path) has no \(wanted) (found: \(present.isEmpty ? "nothing" : present.joined(separator: ", "))). "
            + (variant == nil ? "Supply the weights as safetensors." : "Choose another variant, or none to use what exists."))
    }

    private static func loadSharded(index: URL) throws -> StateDict {
        let data = try readJSONFile(index)
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let map = json["weight_map"] as? [String: String]
        else { throw ModelFolderError("\(index.path) is not a valid safetensors index (no weight_map)") }
        let dir = index.deletingLastPathComponent()
        let shards = Set(map.values).sorted()
        return try StateDict(files: shards.map { try SafeTensorsFile(path: dir.appendingPathComponent($0).path) })
    }
}
