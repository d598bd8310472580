import Foundation
import GRDB

/// A person, pet or object to personalise the model with: its photos, training runs
/// and generations hang off it. Its files live under `subjects/<id>/`, keyed by id, so
/// a rename touches no file.
public struct Subject: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "subject"

    public var id: Int64?
    /// Unique (ignoring case); letters, digits, '-' and '_'.
    public var name: String
    /// The rare identifier word that stands for this subject in prompts ("sks").
    public var token: String
    /// What the subject is ("dog"); used for the instance and class prompts.
    public var classNoun: String
    public var notes = ""
    public var createdAt = Date()
    public var updatedAt = Date()

    /// "sks dog": how prompts name this subject.
    public var instancePhrase: String { "\(token) \(classNoun)" }

    public enum Columns: String, ColumnExpression { case id, name, createdAt }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    /// Checks the naming rules; throws `StoreError.invalidName` with the reason.
    public static func validate(name: String) throws {
        if name.isEmpty { throw StoreError.invalidName(name: name, reason: "it is empty") }
        if name.count > 64 { throw StoreError.invalidName(name: name, reason: "it is longer than 64 characters") }
        if let bad = name.unicodeScalars.first(where: { !isNameCharacter($0) }) {
            throw StoreError.invalidName(name: name, reason: "'\(bad)' is not allowed")
        }
        if !isAlphanumeric(name.unicodeScalars.first!) {
            throw StoreError.invalidName(name: name, reason: "it starts with '\(name.first!)'")
        }
    }

    /// Checks that a token is one word of ASCII letters and digits; throws
    /// `StoreError.invalidToken`.
    public static func validate(token: String) throws {
        if token.isEmpty { throw StoreError.invalidToken(token: token, reason: "it is empty") }
        if token.count > 32 { throw StoreError.invalidToken(token: token, reason: "it is longer than 32 characters") }
        if token.unicodeScalars.contains(where: { $0 == " " || $0 == "\t" }) {
            throw StoreError.invalidToken(token: token, reason: "it is more than one word")
        }
        if let bad = token.unicodeScalars.first(where: { !isAlphanumeric($0) }) {
            throw StoreError.invalidToken(token: token, reason: "'\(bad)' is not a letter or digit")
        }
    }

    /// Checks the class noun: one to three words of letters, digits, '-' or '\''.
    public static func validate(classNoun: String) throws {
        let words = classNoun.split(separator: " ")
        if words.isEmpty { throw StoreError.invalidClassNoun(classNoun: classNoun, reason: "it is empty") }
        if words.count > 3 || classNoun.count > 48 {
            throw StoreError.invalidClassNoun(classNoun: classNoun, reason: "it is longer than three words")
        }
        if let bad = classNoun.unicodeScalars.first(where: { !(isAlphanumeric($0) || $0 == " " || $0 == "-" || $0 == "'") }) {
            throw StoreError.invalidClassNoun(classNoun: classNoun, reason: "'\(bad)' is not allowed")
        }
    }

    static func isAlphanumeric(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
    }

    static func isNameCharacter(_ c: Unicode.Scalar) -> Bool { isAlphanumeric(c) || c == "-" || c == "_" }
}
