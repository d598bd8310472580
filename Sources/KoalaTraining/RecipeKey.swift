import Foundation
import KoalaDiffusion
import KoalaTensor
import TOMLKit

/// One key of a recipe section (RecipeKeys.swift lists them): its TOML name and the
/// property behind it, with how the value is read from TOML, checked, and written to and
/// read from an `Encoder`/`Decoder` (the TOML snapshot and the JSON form).
struct RecipeKey<Section> {
    let name: String
    /// Sets the property from the key's TOML value; `key` is the full path (`optim.betas`).
    let read: (inout Section, TOMLValueConvertible, _ key: String) throws -> Void
    /// Checks the property's value (and the keys inside a nested section).
    let check: (Section, _ key: String) throws -> Void
    let encode: (Section, inout KeyedEncodingContainer<RecipeCodingKey>) throws -> Void
    /// Sets the property when the key is present; an absent key keeps the default.
    let decode: (inout Section, KeyedDecodingContainer<RecipeCodingKey>) throws -> Void

    /// `rule` throws the error for a value it rejects, given the key's full path.
    init<V: RecipeValue>(_ name: String, _ path: WritableKeyPath<Section, V>, rule: ((V, String) throws -> Void)? = nil) {
        self.name = name
        let codingKey = RecipeCodingKey(name)
        read = { section, value, key in section[keyPath: path] = try V.read(value, key: key) }
        check = { section, key in
            let value = section[keyPath: path]
            try value.checkInside(key)
            try rule?(value, key)
        }
        encode = { section, c in try section[keyPath: path].encodeValue(into: &c, codingKey) }
        decode = { section, c in
            if let value = try c.decodeIfPresent(V.self, forKey: codingKey) { section[keyPath: path] = value }
        }
    }

    /// An optional key whose `rule` applies when it is set.
    init<V: RecipeValue>(_ name: String, _ path: WritableKeyPath<Section, V?>, ifSet rule: @escaping (V, String) throws -> Void) {
        self.init(name, path, rule: { value, key in if let value { try rule(value, key) } })
    }
}

struct RecipeCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ name: String) { stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// `path.key`, or `key` at the top.
func recipeKeyPath(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

/// A type a recipe key holds.
protocol RecipeValue: Codable {
    /// The TOML value of `key` as this type; a value of another type is an error naming the key.
    static func read(_ value: TOMLValueConvertible, key: String) throws -> Self
    /// What an array of these is called in errors ("strings").
    static var plural: String { get }
    /// Checks of the value beyond its type (the keys of a section, the choices a key allows).
    func checkInside(_ key: String) throws
    /// Writes the value under `key` (nothing for an unset optional).
    func encodeValue(into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws
    /// Writes an array of these under `key`.
    static func encodeArray(_ values: [Self], into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws
}

extension RecipeValue {
    static var plural: String { "values" }
    func checkInside(_ key: String) throws {}
    func encodeValue(into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws {
        try c.encode(self, forKey: key)
    }
    static func encodeArray(_ values: [Self], into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws {
        try c.encode(values, forKey: key)
    }
}

extension Array: RecipeValue where Element: RecipeValue {
    static func read(_ value: TOMLValueConvertible, key: String) throws -> [Element] {
        guard let array = value.array else {
            throw RecipeError.wrongType(key: key, expected: "an array of \(Element.plural)", got: describeTOML(value))
        }
        return try array.enumerated().map { i, v in try Element.read(v, key: "\(key)[\(i)]") }
    }

    func checkInside(_ key: String) throws {
        for (i, v) in enumerated() { try v.checkInside("\(key)[\(i)]") }
    }

    func encodeValue(into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws {
        try Element.encodeArray(self, into: &c, key)
    }
}

extension Optional: RecipeValue where Wrapped: RecipeValue {
    static func read(_ value: TOMLValueConvertible, key: String) throws -> Wrapped? { try Wrapped.read(value, key: key) }
    func checkInside(_ key: String) throws { try self?.checkInside(key) }
    func encodeValue(into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws {
        try self?.encodeValue(into: &c, key)
    }
}

/// A key whose value is one of the names of an enum.
protocol RecipeChoice: RecipeValue, RawRepresentable<String>, CaseIterable, Equatable {
    /// The cases a recipe may name (all unless a case makes no sense in a recipe).
    static var recipeChoices: [Self] { get }
}

extension RecipeChoice {
    static var recipeChoices: [Self] { Array(allCases) }
    static var plural: String { "strings" }

    static func read(_ value: TOMLValueConvertible, key: String) throws -> Self {
        let name = try String.read(value, key: key)
        guard let choice = recipeChoices.first(where: { $0.rawValue == name }) else {
            throw RecipeError.notOneOf(key: key, allowed: recipeChoices.map(\.rawValue), got: "\"\(name)\"")
        }
        return choice
    }

    func checkInside(_ key: String) throws {
        if !Self.recipeChoices.contains(self) {
            throw RecipeError.notOneOf(key: key, allowed: Self.recipeChoices.map(\.rawValue), got: "\"\(rawValue)\"")
        }
    }

    // By name, so TOMLKit's encoder writes strings.
    func encodeValue(into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws {
        try c.encode(rawValue, forKey: key)
    }

    static func encodeArray(_ values: [Self], into c: inout KeyedEncodingContainer<RecipeCodingKey>, _ key: RecipeCodingKey) throws {
        try c.encode(values.map(\.rawValue), forKey: key)
    }
}

extension TrainingRecipe.TrainMode: RecipeChoice {}
extension TrainingRecipe.LatentSampling: RecipeChoice {}
extension TrainingRecipe.LoRATarget: RecipeChoice {}
extension TrainingRecipe.CheckpointFormat: RecipeChoice {}
extension Precision: RecipeChoice {}
extension OptimizerKind: RecipeChoice {}
extension LRScheduleKind: RecipeChoice {}
extension RNGKind: RecipeChoice {}
extension SchedulerKind: RecipeChoice {}
extension TimestepSpacing: RecipeChoice {}
extension TrainingRecipe.EMAUse: RecipeChoice {}
extension PredictionType: RecipeChoice {
    /// diffusers' DreamBooth scripts train epsilon or v targets only, not `sample`.
    static var recipeChoices: [PredictionType] { [.epsilon, .vPrediction] }
}

/// A table of keys (`[data]`, `[model.lora]`, the recipe itself).
protocol RecipeSection: RecipeValue {
    init()
    static var keys: [RecipeKey<Self>] { get }
}

extension RecipeSection {
    static func read(_ value: TOMLValueConvertible, key: String) throws -> Self {
        guard let table = value.table else {
            throw RecipeError.wrongType(key: key, expected: "a table ([\(key)])", got: describeTOML(value))
        }
        return try read(table: table, path: key)
    }

    /// Unknown keys are rejected before any value is read; absent keys keep the defaults.
    static func read(table: TOMLTable, path: String) throws -> Self {
        let names = keys.map(\.name)
        for k in table.keys.sorted() where !names.contains(k) {
            throw RecipeError.unknownKey(key: recipeKeyPath(path, k), allowed: names, suggestion: closestKey(to: k, in: names))
        }
        var section = Self()
        for key in keys {
            if let value = table[key.name] { try key.read(&section, value, recipeKeyPath(path, key.name)) }
        }
        return section
    }

    func checkInside(_ path: String) throws {
        for key in Self.keys { try key.check(self, recipeKeyPath(path, key.name)) }
    }

    init(keysFrom decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: RecipeCodingKey.self)
        self.init()
        for key in Self.keys { try key.decode(&self, c) }
    }

    func encodeKeys(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: RecipeCodingKey.self)
        for key in Self.keys { try key.encode(self, &c) }
    }
}
