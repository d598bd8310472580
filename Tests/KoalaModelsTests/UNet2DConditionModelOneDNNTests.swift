import XCTest
import KoalaTensor

/// Every U-Net parity test (forward and gradients against diffusers, gradient
/// checkpointing, the tiny preset at batch 2) again with every GEMM forced onto oneDNN,
/// at the same tolerances: linear layers, attention tiles and the GEMMs inside im2col and
/// Winograd convolutions, run concurrently from the Dispatch workers as in a real forward.
/// Runs wherever oneDNN runs (AVX2 and up), so its AVX2 and AVX-512 kernels are each
/// checked on the machines that have them.
final class UNet2DConditionModelOneDNNTests: UNet2DConditionModelTests {
    private var savedBackend: GEMMBackend?

    override func setUpWithError() throws {
        try super.setUpWithError()
        try XCTSkipUnless(BLAS.isOneDNNAvailable, "oneDNN does not run on this CPU (\(CPUFeatures.current)): no oneDNN path to test")
        savedBackend = BLAS.forcedBackend
        BLAS.forcedBackend = .oneDNN
    }

    override func tearDownWithError() throws {
        BLAS.forcedBackend = savedBackend
        try super.tearDownWithError()
    }

    // Linux test discovery finds a test class only by a test method it declares (it then
    // runs the inherited ones as well, so these four run twice: about 0.5 s).
    func testForwardMatchesDiffusersOnOneDNN() throws { try testForwardMatchesDiffusers() }
    func testGradientsMatchDiffusersOnOneDNN() throws { try testGradientsMatchDiffusers() }
    func testGradientCheckpointingGivesTheSameGradientsOnOneDNN() throws { try testGradientCheckpointingGivesTheSameGradients() }
    func testTinyPresetRunsAtBatchTwoOnOneDNN() throws { try testTinyPresetRunsAtBatchTwo() }
}
