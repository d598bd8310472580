import Foundation
import KoalaTensor
import KoalaTestSupport
import XCTest

/// Argument checks at op boundaries fire in the build that ships (the release build the
/// tests run in): a call whose shapes do not fit stops
/// at the op with a message naming them, rather than reading past a buffer and
/// returning garbage (issue 13 item 5). The bad call runs in a child process (this test
/// bundle, filtered to one probe), since stopping is what it must do.
final class BoundaryCheckTests: XCTestCase {
    static let probeVariable = "KB_BOUNDARY_PROBE"

    /// The probes: a bad call each, and the message it must stop with.
    static var probes: [String: (message: String, call: () -> Tensor)] { [
        "matmul": ("matmul: inner dims differ, [2, 3] x [4, 5]", { Tensor.zeros([2, 3]).matmul(Tensor.zeros([4, 5])) }),
        "conv2d": ("conv2d: input has 3 channels, weight [8, 4, 3, 3] expects 4",
                   { Tensor.zeros([1, 3, 8, 8]).conv2d(Tensor.zeros([8, 4, 3, 3]), padding: 1) }),
        "add": ("cannot broadcast shapes [2, 3] and [4, 3]", { Tensor.zeros([2, 3]) + Tensor.zeros([4, 3]) }),
        "embedding": ("embedding: id 10 is outside the vocabulary 0..<4", { Tensor.embedding([1, 10], weight: Tensor.zeros([4, 2])) }),
        "reshape": ("cannot reshape [2, 3] (6 values) to [4, 2]", { Tensor.zeros([2, 3]).reshape([4, 2]) }),
    ] }

    /// Runs in the child only: makes the bad call named by KB_BOUNDARY_PROBE.
    func testProbeInChildProcess() throws {
        guard let name = ProcessInfo.processInfo.environment[Self.probeVariable], let probe = Self.probes[name] else {
            throw XCTSkip("run by testShapeMismatchesStopAtTheOp in a child process")
        }
        let result = probe.call()
        // Reached only if the check did not fire.
        print("probe \(name) returned shape \(result.shape)")
    }

    func testShapeMismatchesStopAtTheOp() throws {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0])
        for (name, probe) in Self.probes.sorted(by: { $0.key < $1.key }) {
            let r = try runChildProcess(runner, arguments: ["KoalaTensorTests.BoundaryCheckTests/testProbeInChildProcess"],
                                        environment: ProcessInfo.processInfo.environment.merging([Self.probeVariable: name, "SWIFT_BACKTRACE": "enable=no"]) { $1 })
            let o = r.stdout, e = r.stderr
            XCTAssertEqual(r.reason, .uncaughtSignal, "\(name): the bad call did not stop the process\n\(o)\(e)")
            XCTAssertFalse(o.contains("returned shape"), "\(name): the bad call returned\n\(o)")
            XCTAssertTrue((o + e).contains(probe.message), "\(name): expected '\(probe.message)' in\n\(o)\(e)")
        }
    }
}
