import KoalaTensor

/// kohya sd-scripts' masked loss (`--masked_loss`): a per-photo mask in 0...1 (a mask PNG
/// or the photo's alpha channel) weights the elementwise loss in latent space. The mask
/// is resized to the latent as `interpolate(mode: "area")` does, and each sample's loss
/// is the mean over channels and pixels, not divided by the mask's sum, as sd-scripts
/// normalises it (so a small subject weighs less than a full frame).
public enum MaskedLoss {
    /// A `[height, width]` mask (row-major) averaged down to `[1, 1, h, w]` as torch's
    /// area interpolation (adaptive average pooling): output cell i covers input rows
    /// floor(i·H/h) ..< ceil((i+1)·H/h), and likewise for columns.
    public static func latentMask(_ mask: [Float], height: Int, width: Int, latentHeight h: Int, latentWidth w: Int) -> Tensor {
        precondition(mask.count == height * width && h >= 1 && w >= 1 && h <= height && w <= width,
                     "mask \(height)x\(width) (\(mask.count) values) to \(h)x\(w)")
        var out = [Float](repeating: 0, count: h * w)
        for i in 0..<h {
            let r0 = i * height / h, r1 = ((i + 1) * height + h - 1) / h
            for j in 0..<w {
                let c0 = j * width / w, c1 = ((j + 1) * width + w - 1) / w
                var s: Float = 0
                for r in r0..<r1 { for c in c0..<c1 { s += mask[r * width + c] } }
                out[i * w + j] = s / Float((r1 - r0) * (c1 - c0))
            }
        }
        return Tensor(shape: [1, 1, h, w], values: out)
    }

    /// Per-sample loss `mean over (c, h, w) of mask · (pred − target)²`; `masks` is
    /// `[batch, 1, h, w]` (rows of ones for unmasked samples such as class images), a
    /// constant of the loss. Gradients flow to `pred` (and `target`).
    public static func perExample(_ pred: Tensor, _ target: Tensor, masks: Tensor) -> Tensor {
        let b = pred.shape[0]
        precondition(pred.rank == 4 && masks.shape == [b, 1, pred.shape[2], pred.shape[3]],
                     "masks \(masks.shape) for a prediction of \(pred.shape)")
        return (pred.mseLoss(target, reduction: .none) * masks).reshape([b, -1]).mean(dim: 1)
    }
}
