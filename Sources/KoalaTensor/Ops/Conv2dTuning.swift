import Foundation

/// Tuning knobs of the convolution kernels (internal: tests shrink the tile so small
/// fixtures exercise the tiling paths).
enum Conv2dTuning {
    /// Upper bound on the im2col tile, in floats (whole output rows; at least one row).
    nonisolated(unsafe) static var maxColumnFloats = 3 << 20
    /// 3x3 stride-1 convolutions use Winograd F(2x2, 3x3) (2.25x fewer multiplies).
    nonisolated(unsafe) static var winograd = true
    /// Upper bound on one thread's Winograd buffers (transformed input and product), in floats.
    nonisolated(unsafe) static var winogradBandFloats = 3 << 20
    /// Upper bound on the Winograd weight gradient's per-thread sums (16·out·in floats
    /// each); wider layers take the im2col path, which needs no such buffers.
    nonisolated(unsafe) static var winogradWeightGradFloats = 16 << 20
    /// Largest weight (in floats) whose im2col gradient is summed per thread; wider
    /// weights are summed once, tile after tile.
    nonisolated(unsafe) static var maxWeightPartialFloats = 4 << 20
    /// Forces (true) or forbids (false) splitting im2col GEMMs by output channels;
    /// nil decides by shape (`Tensor.splitsChannels`).
    nonisolated(unsafe) static var channelSplit: Bool? = nil
    /// Largest transformed weight (16·out·in floats) Winograd builds whole; wider layers
    /// take `Winograd.forwardByChannelBlocks` or im2col.
    nonisolated(unsafe) static var winogradMaxWeightFloats = 16 << 20
    /// Output channels per block of the wide-layer Winograd path.
    nonisolated(unsafe) static var winogradOutputBlock = 128
    /// Fewest 2x2 output tiles per image for Winograd. Below (16x16 outputs at 512 px)
    /// transforming the weights every call costs more than the multiplies it saves:
    /// 640->1280 at 16x16 ran at half the speed of im2col, 1280x1280 20% slower.
    nonisolated(unsafe) static var winogradMinTiles = 256
}
