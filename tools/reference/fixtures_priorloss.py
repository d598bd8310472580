"""DreamBooth prior-preservation loss as diffusers' train_dreambooth_lora_sdxl.py computes
it: the U-Net batch is [instance rows; class rows]; loss = MSE(instance) +
prior_loss_weight * MSE(class). The weighted case scales each row's mean squared
error first (Min-SNR-gamma per example). Writes Tests/Fixtures/priorloss.safetensors."""
import torch
import torch.nn.functional as F
from common import randn, save

pred = randn(4, 4, 2, 3, seed=1)
target = randn(4, 4, 2, 3, seed=2)
weights = torch.tensor([0.3, 1.0, 0.5, 0.8])
n, lam = 2, 0.7


def prior_loss(pred, target, weights=None):
    model_pred, model_pred_prior = torch.chunk(pred, 2, dim=0)
    tgt, tgt_prior = torch.chunk(target, 2, dim=0)
    if weights is None:
        loss = F.mse_loss(model_pred.float(), tgt.float(), reduction="mean")
        prior = F.mse_loss(model_pred_prior.float(), tgt_prior.float(), reduction="mean")
    else:
        per = F.mse_loss(pred, target, reduction="none").mean(dim=[1, 2, 3]) * weights
        loss, prior = per[:n].mean(), per[n:].mean()
    return loss + lam * prior


out = {"pred": pred, "target": target, "weights": weights}
for name, w in [("plain", None), ("weighted", weights)]:
    p = pred.clone().requires_grad_(True)
    loss = prior_loss(p, target, w)
    loss.backward()
    out[f"{name}.loss"] = loss.detach().reshape(1)
    out[f"{name}.grad_pred"] = p.grad
    out[f"{name}.instance_only"] = F.mse_loss(pred[:n], target[:n]).reshape(1) if w is None \
        else (F.mse_loss(pred, target, reduction="none").mean(dim=[1, 2, 3]) * weights)[:n].mean().reshape(1)
save("priorloss", out)
