import KoalaTensor

/// Keeps intermediate U-Net features of one forward pass, by diffusers module name —
/// what a PyTorch forward hook registered on `unet.named_modules()` sees — for knowledge
/// distillation (KOALA, BK-SDM):
/// - `….transformer_blocks.l.attn1`: a transformer block's self-attention output (after
///   `to_out`, before the residual add), [B, H·W, dim];
/// - `down_blocks.i` (after its downsampler), `mid_block`, `up_blocks.i` (after its
///   upsampler): a stage's last feature, [B, C, h, w].
///
/// Only the names asked for are kept, so a teacher's unmatched blocks free their
/// activations as usual. A forward without a recorder does not look at any of this.
public final class UNetFeatureRecorder {
    public let names: Set<String>
    public fileprivate(set) var features: [String: Tensor] = [:]

    public init(recording names: Set<String>) { self.names = names }

    /// The names asked for that the forward pass did not produce (a name the model does
    /// not have), sorted.
    public var missing: [String] { names.subtracting(features.keys).sorted() }

    /// The top of the U-Net, for its forward pass.
    var root: UNetFeatureScope { UNetFeatureScope(recorder: self, path: "") }
}

/// Where a block runs inside the U-Net (its diffusers module path), so that it can hand
/// its features to the recorder under their module names.
public struct UNetFeatureScope {
    let recorder: UNetFeatureRecorder
    let path: String

    /// The scope of the child module `name`.
    func child(_ name: String) -> UNetFeatureScope {
        UNetFeatureScope(recorder: recorder, path: path.isEmpty ? name : path + "." + name)
    }

    /// Whether the child module `name` (or this module itself, for nil) is recorded.
    func wants(_ name: String? = nil) -> Bool { recorder.names.contains(fullName(name)) }

    /// Keeps `value` as the output of the child module `name` (or of this module, for
    /// nil) when it is asked for.
    func record(_ name: String? = nil, _ value: Tensor) {
        let key = fullName(name)
        if recorder.names.contains(key) { recorder.features[key] = value }
    }

    private func fullName(_ name: String?) -> String {
        guard let name else { return path }
        return path.isEmpty ? name : path + "." + name
    }
}
