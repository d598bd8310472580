import Foundation
import KoalaTensor
import TOMLKit

extension TrainingRecipe {
    /// Parses and validates a recipe; `source` names it in syntax errors.
    public static func parse(toml text: String, source: String = "recipe") throws -> TrainingRecipe {
        let root = try parseRecipeTOML(text, source: source)
        let r = try read(table: root, path: "")
        try r.validate()
        return r
    }

    /// Reads, parses and validates the recipe file at `path`; errors name the file.
    public static func load(path: String) throws -> TrainingRecipe {
        try loadRecipeFile(path) { try parse(toml: $0, source: path) }
    }
}

/// The TOML table of a recipe text; a syntax error names `source`, line and column.
func parseRecipeTOML(_ text: String, source: String) throws -> TOMLTable {
    do {
        return try TOMLTable(string: text)
    } catch let e as TOMLParseError {
        throw RecipeError.syntax(source: source, line: e.source.begin.line, column: e.source.begin.column, reason: e.description)
    }
}

/// Reads the recipe file at `path` (a regular UTF-8 file under the text-size cap) and
/// hands its text to `parse`; every error but a syntax error (which has its own line and
/// column) is wrapped to name the file.
func loadRecipeFile<R>(_ path: String, _ parse: (String) throws -> R) throws -> R {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw RecipeError.fileNotFound(path: path)
    }
    if isDirectory.boolValue {
        throw RecipeError.unreadable(path: path, reason: "it is a directory, not a .toml file")
    }
    let bytes: Foundation.Data
    do {
        bytes = try BoundedFile.read(path, limit: BoundedFile.textLimit)
    } catch {
        throw RecipeError.unreadable(path: path, reason: error.localizedDescription)
    }
    guard let text = String(data: bytes, encoding: .utf8) else {
        throw RecipeError.unreadable(path: path, reason: "not UTF-8 text (a TOML recipe is a text file)")
    }
    do {
        return try parse(text)
    } catch let e as RecipeError {
        if case .syntax = e { throw e }
        throw RecipeError.inFile(path: path, e)
    }
}

// How each type of value reads from TOML; sections, arrays, optionals and choices are in RecipeKey.swift.

extension Bool: RecipeValue {
    static func read(_ value: TOMLValueConvertible, key: String) throws -> Bool {
        guard let b = value.bool else { throw RecipeError.wrongType(key: key, expected: "true or false", got: describeTOML(value)) }
        return b
    }
}

extension Int: RecipeValue {
    static func read(_ value: TOMLValueConvertible, key: String) throws -> Int {
        guard let i = value.int else { throw RecipeError.wrongType(key: key, expected: "an integer", got: describeTOML(value)) }
        return i
    }
}

/// Seeds: a non-negative TOML integer.
extension UInt64: RecipeValue {
    static func read(_ value: TOMLValueConvertible, key: String) throws -> UInt64 {
        let i = try Int.read(value, key: key)
        guard i >= 0 else { throw RecipeError.outOfRange(key: key, requirement: ">= 0", got: "\(i)") }
        return UInt64(i)
    }
}

extension Double: RecipeValue {
    static var plural: String { "numbers" }

    /// Integers are accepted where a float is expected (`learning_rate = 1`).
    static func read(_ value: TOMLValueConvertible, key: String) throws -> Double {
        let x: Double
        if let d = value.double { x = d } else if let i = value.int { x = Double(i) } else {
            throw RecipeError.wrongType(key: key, expected: "a number", got: describeTOML(value))
        }
        guard x.isFinite else { throw RecipeError.outOfRange(key: key, requirement: "a finite number", got: formatNumber(x)) }
        return x
    }
}

extension String: RecipeValue {
    static var plural: String { "strings" }

    static func read(_ value: TOMLValueConvertible, key: String) throws -> String {
        guard let s = value.string else { throw RecipeError.wrongType(key: key, expected: "a string", got: describeTOML(value)) }
        return s
    }
}

/// A TOML value as an error message shows it: its type and, for scalars, the value.
func describeTOML(_ v: TOMLValueConvertible) -> String {
    switch v.type {
    case .string: return "string \"\(v.string ?? "")\""
    case .int: return "integer \(v.int.map { String($0) } ?? "")"
    case .double: return "floating-point number \(v.double.map(formatNumber) ?? "")"
    case .bool: return "boolean \(v.bool.map { String($0) } ?? "")"
    case .array: return "an array"
    case .table: return "a table"
    default: return "a \(v.type)"
    }
}

/// Doubles as people write them: `-1` rather than `-1.0`, `5e-05` as Swift prints it.
func formatNumber(_ x: Double) -> String {
    if x.isFinite && x == x.rounded() && abs(x) < 1e15 { return String(Int64(x)) }
    return "\(x)"
}

/// The allowed key nearest to a misspelt one (edit distance at most 3), if any.
func closestKey(to key: String, in allowed: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var prev = Array(0...b.count)
        for i in stride(from: 1, through: a.count, by: 1) {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in stride(from: 1, through: b.count, by: 1) {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
    let k = Array(key)
    let best = allowed.map { ($0, distance(k, Array($0))) }.min { $0.1 < $1.1 }
    guard let (name, d) = best, d <= min(3, max(1, key.count / 2)) else { return nil }
    return name
}
