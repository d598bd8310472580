"""diffusers' EMAModel (training_utils.py) over 20 updates of a trained parameter list
with a frozen member: the decay each update used and every shadow parameter after it,
for the plain schedule with update_after_step and min_decay, and for the warm-up
schedule. The parameters follow a random walk like a training's updates.
Writes Tests/Fixtures/ema.safetensors."""
import torch
from diffusers.training_utils import EMAModel
from common import randn, save

out = {}
settings = {
    "plain": dict(decay=0.9, min_decay=0.2, update_after_step=3),
    "warmup": dict(decay=0.999, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3),
}
for name, kw in settings.items():
    params = [randn(3, 4, seed=1), randn(5, seed=2), randn(2, 2, seed=3)]
    params[0].requires_grad_(True)
    params[1].requires_grad_(True)  # params[2] frozen: copied, not averaged
    for i, p in enumerate(params):
        out[f"{name}.init.{i}"] = p.detach().clone()
    ema = EMAModel(params, foreach=False, **kw)
    for step in range(1, 21):
        with torch.no_grad():
            for i, p in enumerate(params):
                p.add_(randn(*p.shape, seed=100 * step + i, scale=0.1))
                out[f"{name}.param.{step}.{i}"] = p.detach().clone()
        ema.step(params)
        out[f"{name}.decay.{step}"] = torch.tensor([ema.cur_decay_value], dtype=torch.float64)
        for i, s in enumerate(ema.shadow_params):
            out[f"{name}.shadow.{step}.{i}"] = s.detach().clone()
save("ema", out)
