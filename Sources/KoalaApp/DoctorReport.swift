import Foundation
import KoalaStore
import KoalaTensor

/// What `doctor` found: the data directory's health and the machine it runs on.
public struct DoctorReport: Sendable {
    public var health: HealthReport
    /// The CPU's features as the kernels see them.
    public var cpu: String
    /// Which GEMM library serves which shapes.
    public var gemm: String

    public var isHealthy: Bool { health.isHealthy }

    /// Problems counted as the summary line states them: each file problem and orphan, a
    /// failed integrity check, any foreign-key violations.
    public var problemCount: Int {
        health.fileProblems.count + health.orphans.count + (health.integrity == ["ok"] ? 0 : 1) + (health.foreignKeyViolations > 0 ? 1 : 0)
    }
}

/// Why `doctor` could not check.
public enum DoctorError: Error, Equatable, CustomStringConvertible {
    /// `home` holds no database: there is nothing to check.
    case noDataDirectory(home: String)

    public var description: String {
        switch self {
        case .noDataDirectory(let home):
            return "no KoalaBooth data directory at \(home) (no \(SubjectStore.databaseFileName) there)"
        }
    }
}

/// The doctor use case: checks the data directory (database integrity, recorded files,
/// stray files) and changes nothing, not even the leftovers of killed processes.
public struct DoctorUseCase: Sendable {
    public let location: StoreLocation

    public init(location: StoreLocation) { self.location = location }

    public func run(verifyHashes: Bool = false) throws -> DoctorReport {
        guard let store = try location.openExisting(removeLeftovers: false) else {
            throw DoctorError.noDataDirectory(home: location.home.path)
        }
        return DoctorReport(health: try store.checkHealth(verifyHashes: verifyHashes),
                            cpu: "\(CPUFeatures.current)", gemm: BLAS.description)
    }
}
