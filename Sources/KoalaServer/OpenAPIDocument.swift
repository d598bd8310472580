import Foundation
import Yams

/// The API's description: `Resources/openapi.yaml` (docs/openapi.yaml links to it), the
/// one source, served as JSON at `GET /v1/openapi.json`.
public enum OpenAPIDocument {
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// The bundled YAML text.
    public static func yaml() throws -> String {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml", subdirectory: "Resources")
            ?? Bundle.module.url(forResource: "openapi", withExtension: "yaml") else {
            throw Invalid(description: "openapi.yaml is missing from the KoalaServer resources")
        }
        return try String(contentsOf: url, encoding: .utf8)
    }

    /// The document as a JSON value (dictionaries with string keys, arrays, strings,
    /// numbers, booleans).
    public static func object() throws -> [String: Any] {
        guard let loaded = try Yams.load(yaml: try yaml()), let root = try jsonValue(loaded) as? [String: Any] else {
            throw Invalid(description: "openapi.yaml is not a mapping")
        }
        return root
    }

    /// The JSON bytes served.
    public static func json() throws -> Data {
        try JSONSerialization.data(withJSONObject: try object(), options: [.sortedKeys, .withoutEscapingSlashes])
    }

    /// YAML's values as JSON's: mapping keys become strings ('200' and 200 alike).
    static func jsonValue(_ value: Any) throws -> Any {
        switch value {
        case let map as [AnyHashable: Any]:
            var out: [String: Any] = [:]
            for (k, v) in map { out["\(k.base)"] = try jsonValue(v) }
            return out
        case let map as [String: Any]:
            return try map.mapValues(jsonValue)
        case let list as [Any]:
            return try list.map(jsonValue)
        case is String, is Bool, is Int, is Double, is NSNull:
            return value
        default:
            throw Invalid(description: "openapi.yaml holds a value JSON cannot (\(type(of: value)): \(value))")
        }
    }
}
