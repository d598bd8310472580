"""kohya sd-scripts' masked loss (`--masked_loss`), restated as its
library/custom_train_functions.py `apply_masked_loss` and train_network.py apply it
(sd-scripts is not a package): the alpha mask (0..1) gets a channel dimension, is
resized to the latent by `interpolate(mode="area")`, multiplies the elementwise MSE,
and each sample's loss is the mean over channels and pixels (not divided by the mask's
sum). Cases: the photo pipeline's 8x ratio and an uneven ratio. Writes the mask at
latent size, the per-sample losses and the gradient of their mean w.r.t. the prediction.
Writes Tests/Fixtures/maskedloss.safetensors."""
import torch
import torch.nn.functional as F
from common import randn, save

out = {}
for name, (H, W, h, w) in {"even": (32, 48, 4, 6), "uneven": (21, 30, 4, 7)}.items():
    mask = torch.rand(2, H, W, generator=torch.Generator().manual_seed(5)).round()  # 0/1 like an alpha cut-out
    mask[1, : H // 2] = 0.25  # a partial weight too
    pred = randn(2, 4, h, w, seed=6).requires_grad_(True)
    target = randn(2, 4, h, w, seed=7)
    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
    m = mask.to(dtype=loss.dtype).unsqueeze(1)
    m = F.interpolate(m, size=loss.shape[2:], mode="area")
    loss = (loss * m).mean([1, 2, 3])
    loss.mean().backward()
    out.update({f"{name}.mask": mask, f"{name}.latentmask": m, f"{name}.pred": pred.detach(), f"{name}.target": target,
                f"{name}.loss": loss.detach(), f"{name}.grad": pred.grad})
save("maskedloss", out)
