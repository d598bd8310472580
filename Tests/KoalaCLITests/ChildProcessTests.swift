import Foundation
import KoalaTestSupport
import XCTest

/// The runner every CLI test uses: a child that writes far more than a pipe holds to
/// both streams (and reads its stdin) finishes, and nothing it wrote is lost.
final class ChildProcessTests: XCTestCase {
    func testLargeOutputOnBothStreamsDoesNotDeadlock() throws {
        let script = "head -c 300000 /dev/zero | tr '\\0' e >&2; head -c 200000 /dev/zero | tr '\\0' o; cat"
        let r = try runChildProcess(URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", script], input: "from stdin")
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.stderr.count, 300_000)
        XCTAssertEqual(r.stdout.count, 200_000 + "from stdin".count)
        XCTAssertTrue(r.stdout.hasSuffix("from stdin"))
    }
}
