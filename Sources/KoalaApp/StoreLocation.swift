import Foundation
import KoalaStore

/// Where the subject store lives, and the two ways the use cases open it: creating the
/// data directory for what changes it, or only when it exists for what reads (so a
/// look-up in the wrong place creates nothing).
public struct StoreLocation: Sendable {
    public let home: URL
    /// The store a long-running process opened once (`keepingOpen`): both ways return it.
    private var kept: SubjectStore?

    public init(home: URL) { self.home = home }

    /// `home` as given, else `$KOALABOOTH_HOME`, else `./.koalabooth`.
    public init(homeOption: String?) { home = SubjectStore.resolveHome(homeOption) }

    /// This location with its store opened now (created or upgraded, leftovers of killed
    /// processes removed) and kept open: the service answers each request with it instead
    /// of opening the database (and walking the directory) per request, ~4 ms each.
    public func keepingOpen() throws -> StoreLocation {
        var location = self
        location.kept = try open()
        return location
    }

    /// Opens the store, creating the directory and database if needed (read-only when
    /// the directory cannot be written). `removeLeftovers: false` leaves what killed
    /// processes left (for `doctor`, which changes nothing).
    public func open(removeLeftovers: Bool = true) throws -> SubjectStore {
        if let kept { return kept }
        return try SubjectStore(home: home, removeLeftovers: removeLeftovers)
    }

    /// Opens the store if its database exists. Subject files without a database are
    /// refused (`StoreError.databaseMissing`), not taken for an empty directory.
    public func openExisting(removeLeftovers: Bool = true) throws -> SubjectStore? {
        if let kept { return kept }
        return SubjectStore.databaseExists(at: home) || SubjectStore.holdsSubjectFiles(at: home)
            ? try open(removeLeftovers: removeLeftovers) : nil
    }
}
