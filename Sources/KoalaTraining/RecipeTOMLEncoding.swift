import Foundation
import TOMLKit

extension TrainingRecipe {
    /// The recipe as TOML with every key written out (optional keys only when set), by
    /// TOMLKit's encoder from the key tables: the snapshot a run records, which
    /// `parse(toml:)` reads back to an equal recipe (as it reads the snapshots of runs
    /// recorded by earlier versions, whose writer put the keys in another order).
    public func tomlString() -> String {
        do {
            return try TOMLEncoder(options: [.allowUnicodeStrings]).encode(self)
        } catch {
            // Every value of a recipe has a TOML form; a seed above `maxSeed` fails validation first.
            preconditionFailure("a recipe could not be written as TOML: \(error)")
        }
    }
}
