import Foundation

/// A recipe that cannot be used, with the key at fault and how to fix it.
public indirect enum RecipeError: Error, Equatable, CustomStringConvertible {
    /// No file at the path.
    case fileNotFound(path: String)
    /// The file exists but cannot be read as UTF-8 text.
    case unreadable(path: String, reason: String)
    /// Not TOML; `line` and `column` are 1-based, from TOMLKit's parser.
    case syntax(source: String, line: Int, column: Int, reason: String)
    /// A key no section knows; `suggestion` is the closest known key.
    case unknownKey(key: String, allowed: [String], suggestion: String?)
    /// A value of another TOML type than the key takes.
    case wrongType(key: String, expected: String, got: String)
    /// A number or list outside the key's allowed range.
    case outOfRange(key: String, requirement: String, got: String)
    /// A string that is not one of the key's choices.
    case notOneOf(key: String, allowed: [String], got: String)
    /// A value that contradicts another key.
    case conflict(key: String, reason: String)
    /// An error in the recipe file at `path`.
    case inFile(path: String, RecipeError)
    /// An error caused by an override (`RecipeOverrides`) of `key`, not by the recipe.
    case override(key: String, RecipeError)

    /// The full key path at fault (`optim.learning_rate`), nil for file errors.
    public var key: String? {
        switch self {
        case .fileNotFound, .unreadable, .syntax: nil
        case .unknownKey(let k, _, _), .wrongType(let k, _, _), .outOfRange(let k, _, _),
             .notOneOf(let k, _, _), .conflict(let k, _): k
        case .inFile(_, let e), .override(_, let e): e.key
        }
    }

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "recipe file '\(path)' does not exist; pass the path of a TOML recipe such as recipes/koala-700m-lora-cpu.toml"
        case .unreadable(let path, let reason):
            return "cannot read recipe file '\(path)': \(reason)"
        case .syntax(let source, let line, let column, let reason):
            return "\(source):\(line):\(column): not valid TOML: \(reason)"
        case .unknownKey(let key, let allowed, let suggestion):
            let hint = suggestion.map { "; did you mean '\($0)'?" } ?? ""
            return "unknown key '\(key)'\(hint) (allowed here: \(allowed.joined(separator: ", ")); see recipes/README.md)"
        case .wrongType(let key, let expected, let got):
            return "\(key) must be \(expected), got \(got)"
        case .outOfRange(let key, let requirement, let got):
            return "\(key) must be \(requirement), got \(got)"
        case .notOneOf(let key, let allowed, let got):
            return "\(key) must be one of \(allowed.map { "\"\($0)\"" }.joined(separator: ", ")); got \(got)"
        case .conflict(let key, let reason):
            return "\(key): \(reason)"
        case .inFile(let path, let error):
            return "\(path): \(error)"
        case .override(_, let error):
            return "\(error) (an override of the recipe)"
        }
    }
}
