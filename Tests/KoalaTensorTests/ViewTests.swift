import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class ViewTests: XCTestCase {
    func testViewsShareStorage() {
        let t = Tensor(shape: [2, 3], values: [0, 1, 2, 3, 4, 5])
        XCTAssertTrue(t.reshape([3, 2]).storage === t.storage)
        let tr = t.transposed()
        XCTAssertTrue(tr.storage === t.storage)
        XCTAssertFalse(tr.isContiguous)
        XCTAssertEqual(tr.toArray(), [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(t.slice(1, 1, 3).toArray(), [1, 2, 4, 5])
        XCTAssertEqual(t.reshape([-1]).shape, [6])
        XCTAssertEqual(Tensor(shape: [3], values: [1, 2, 3]).expand([2, 3]).toArray(), [1, 2, 3, 1, 2, 3])
    }

    func testViewGradients() {
        gradCheck([Tensor.randn([2, 3, 4], seed: 1)]) { $0[0].permute([2, 0, 1]).contiguous() }
        gradCheck([Tensor.randn([2, 5], seed: 2)]) { $0[0].slice(1, 1, 4) }
        gradCheck([Tensor.randn([3], seed: 3)]) { $0[0].expand([2, 3]) }
        gradCheck([Tensor.randn([2, 6], seed: 4)]) { $0[0].transposed().reshape([3, 4]) }
    }
}
