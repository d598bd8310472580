import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class UpsampleTests: XCTestCase {
    func testUpsampleMatchesTorch() throws {
        let f = try Fixtures.open("convnorm")
        let x = try f.tensor("upsample.x")
        x.requiresGrad = true
        let out = x.upsampleNearest2x()
        assertClose(out, try f.tensor("upsample.out"), atol: 0, rtol: 0, "forward")
        out.backward(try f.tensor("upsample.grad_out"))
        assertClose(x.grad!, try f.tensor("upsample.grad_x"), "grad x")
    }

    func testUpsampleGradients() {
        gradCheck([Tensor.randn([2, 3, 3, 4], seed: 1)]) { $0[0].upsampleNearest2x() }
    }
}
