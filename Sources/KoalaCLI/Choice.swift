import ArgumentParser
import KoalaDiffusion
import KoalaTensor

/// A type whose values an option spells out (`--scheduler euler`).
protocol Spelled: Sendable {
    init?(spelling: String)
    var spelling: String { get }
}

extension Spelled where Self: RawRepresentable, RawValue == String {
    init?(spelling: String) { self.init(rawValue: spelling) }
    var spelling: String { rawValue }
}

extension SchedulerKind: Spelled {}
extension TimestepSpacing: Spelled {}
extension RNGKind: Spelled {}
extension VAETiling: Spelled {}
extension Precision: Spelled {
    /// Any case, as `model.precision` in a recipe.
    init?(spelling: String) { try? self.init(parsing: spelling) }
}

/// An option whose value is one of a fixed set (`SchedulerKind`, `Precision`, …).
/// ArgumentParser parses it; a spelling outside the set is kept (`unknown`) so that the
/// command's `validate()` refuses it in its own words, naming the flag and the choices.
/// The help text lists the values itself, so ArgumentParser adds no list of its own.
enum Choice<Value: Spelled>: ExpressibleByArgument {
    case known(Value)
    case unknown(String)

    init(_ value: Value) { self = .known(value) }

    init?(argument: String) { self = Value(spelling: argument).map { .known($0) } ?? .unknown(argument) }

    /// The value; nil for a spelling outside the set.
    var value: Value? {
        if case .known(let v) = self { return v }
        return nil
    }

    var spelling: String {
        switch self {
        case .known(let v): return v.spelling
        case .unknown(let s): return s
        }
    }

    var defaultValueDescription: String { spelling }

    static var allValueStrings: [String] { [] }
}
