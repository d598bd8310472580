import Foundation
import KoalaModels

/// The models the service offers, registered by name at start: clients name a model,
/// never a path, so a request cannot make the server read an arbitrary folder.
public struct ModelRegistry: Sendable {
    public struct Model: Sendable, Equatable {
        public var name: String
        /// The diffusers folder (absolute).
        public var folder: URL
        /// `_class_name` of its model_index.json.
        public var pipelineClass: String
    }

    /// By name.
    public private(set) var models: [Model] = []

    public init() {}

    /// Registers each `(name, folder)`; checks the names and that each folder is a diffusers
    /// pipeline folder (`ModelFolderError` otherwise).
    public init(_ entries: [(name: String, folder: String)]) throws {
        for (name, folder) in entries {
            try Self.validate(name: name)
            if models.contains(where: { $0.name == name }) { throw ServeError.duplicateModelName(name: name) }
            let pipeline = try PipelineFolder(path: folder)
            models.append(Model(name: name, folder: pipeline.root, pipelineClass: pipeline.pipelineClass))
        }
        models.sort { $0.name < $1.name }
    }

    public func model(named name: String) -> Model? { models.first { $0.name == name } }

    static func validate(name: String) throws {
        if name.isEmpty { throw ServeError.invalidModelName(name: name, reason: "it is empty") }
        if name.count > 64 { throw ServeError.invalidModelName(name: name, reason: "it is longer than 64 characters") }
        let allowed = { (c: Character) in c.isASCII && (c.isLetter || c.isNumber || "-_.".contains(c)) }
        if let bad = name.first(where: { !allowed($0) }) {
            throw ServeError.invalidModelName(name: name, reason: "'\(bad)' is not allowed")
        }
        if !(name.first!.isLetter || name.first!.isNumber) {
            throw ServeError.invalidModelName(name: name, reason: "it starts with '\(name.first!)'")
        }
    }
}
