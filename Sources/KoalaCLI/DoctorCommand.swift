import ArgumentParser
import Foundation
import KoalaApp
import KoalaStore

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the data directory: database integrity, recorded files, stray files.",
        discussion: "Exits with status 1 when it finds a problem. It changes nothing."
    )

    @Flag(name: .customLong("verify-hashes"), help: "Also re-hash every photo and checkpoint (slower).")
    var verifyHashes = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let doctor = try DoctorUseCase(location: global.location).run(verifyHashes: verifyHashes)
        let report = doctor.health
        if json {
            try Output.json(report)
        } else {
            print("data directory: \(report.home) (schema \(report.schemaVersion))")
            print("cpu: \(doctor.cpu)")
            print("gemm: \(doctor.gemm)")
            print("database integrity: \(report.integrity.joined(separator: "; "))")
            if report.foreignKeyViolations > 0 { print("foreign key violations: \(report.foreignKeyViolations)") }
            print("recorded files checked: \(report.filesChecked)")
            for p in report.fileProblems { print("  \(p.kind) \(p.path): \(p.problem)") }
            if !report.orphans.isEmpty {
                print("files no record refers to (\(report.orphans.count)); safe to delete if you do not need them:")
                for o in report.orphans { print("  \(o)") }
            }
            if !report.leftovers.isEmpty {
                print("leftovers of interrupted operations (\(report.leftovers.count); the next koalabooth command cleans them up, putting back files an unfinished delete had moved aside):")
                for l in report.leftovers { print("  \(l)") }
            }
            if report.isHealthy { print("no problems found") }
        }
        if !doctor.isHealthy {
            let n = doctor.problemCount
            Output.note("doctor found \(n) problem\(n == 1 ? "" : "s") in \(report.home).")
            throw ExitCode.failure
        }
    }
}
