import Foundation

/// What a finished child process left: its exit status and everything it wrote.
public struct ChildProcessResult: Sendable {
    public let status: Int32
    public let reason: Process.TerminationReason
    public let stdout: String
    public let stderr: String
}

/// Runs a program to its end, feeding `input` to its stdin (nil: the test's own stdin).
/// stdout and stderr are drained on their own threads: reading one to its end before
/// the other deadlocks once the child fills the other pipe (64 KiB).
public func runChildProcess(_ executable: URL, arguments: [String], environment: [String: String]? = nil,
                            input: String? = nil) throws -> ChildProcessResult {
    let p = Process()
    p.executableURL = executable
    p.arguments = arguments
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let stdin = input.map { _ in Pipe() }
    if let stdin { p.standardInput = stdin }
    try p.run()
    let drained = DispatchGroup()
    let o = PipeDrain(out, group: drained), e = PipeDrain(err, group: drained)
    if let stdin, let input {
        // A child that exits without reading its input must not kill the test with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        try? stdin.fileHandleForWriting.write(contentsOf: Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
    }
    drained.wait()
    p.waitUntilExit()
    return ChildProcessResult(status: p.terminationStatus, reason: p.terminationReason,
                              stdout: String(decoding: o.data, as: UTF8.self), stderr: String(decoding: e.data, as: UTF8.self))
}

/// Reads one pipe to its end on a background thread.
private final class PipeDrain: @unchecked Sendable {
    private(set) var data = Data()

    init(_ pipe: Pipe, group: DispatchGroup) {
        group.enter()
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            group.leave()
        }
    }
}
