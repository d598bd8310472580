import XCTest
import KoalaTestSupport
@testable import KoalaTensor

final class EmbeddingTests: XCTestCase {
    func testEmbeddingMatchesTorch() throws {
        let f = try Fixtures.open("ops")
        let ids = try f.tensor("embedding.ids")
        try checkParity("embedding", inputs: ["weight"]) {
            Tensor.embedding(ids.toArray().map { Int($0) }, idsShape: ids.shape, weight: $0[0])
        }
    }

    func testEmbeddingGradient() {
        gradCheck([Tensor.randn([6, 3], seed: 1)]) { Tensor.embedding([2, 0, 2, 5], idsShape: [2, 2], weight: $0[0]) }
    }

    func testTimestepEmbeddingMatchesDiffusers() throws {
        let f = try Fixtures.open("ops")
        let t = try f.tensor("temb.t").toArray()
        // Arguments reach 999 rad: a one-ulp difference in a frequency moves sin by ~1e-4.
        func check(_ name: String, _ dim: Int, _ flip: Bool, _ shift: Float, scale: Float = 1, period: Float = 10000,
                   timesteps: [Float]? = nil) throws {
            let got = Tensor.timestepEmbedding(timesteps ?? t, dim: dim, flipSinToCos: flip, downscaleFreqShift: shift,
                                               scale: scale, maxPeriod: period)
            assertClose(got, try f.tensor("temb.\(name)"), atol: 2e-4, rtol: 0, name)
        }
        try check("flip_shift0_8", 8, true, 0)
        try check("noflip_shift1_8", 8, false, 1)
        try check("flip_shift1_odd7", 7, true, 1)
        try check("noflip_shift0_odd9", 9, false, 0)
        try check("scale2_period100_6", 6, false, 1, scale: 2, period: 100)
        try check("sdxl_time_320", 320, true, 0)
        try check("sdxl_add_256", 256, true, 0, timesteps: try f.tensor("temb.sizes").toArray())
    }

    func testTimestepEmbeddingRecordsNoHistory() {
        let e = Tensor.timestepEmbedding([1, 2], dim: 4, flipSinToCos: true, downscaleFreqShift: 0)
        XCTAssertFalse(e.requiresGrad)
        XCTAssertNil(e.gradFn)
    }
}
