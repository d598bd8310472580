"""kohya sd-scripts' timestep weighting, written as its library/custom_train_functions.py
and library/train_util.py define it (sd-scripts is not a package, so its formulas are
restated here on diffusers' DDPMScheduler, as sd-scripts uses it):
- `prepare_scheduler_for_custom_training`: all_snr = (sqrt(ac) / sqrt(1 - ac))^2;
- `apply_debiased_estimation`: snr clamped to 1000, weight 1/sqrt(snr) (epsilon) or
  1/(snr + 1) (v-prediction);
- `get_timesteps`: randint(min_timestep, max_timestep) per sample, or max_timestep for
  every sample when min >= max; drawn after the noise (and offset noise) from one generator.
Writes Tests/Fixtures/timestepweights.safetensors."""
import torch
from diffusers import DDPMScheduler
from common import save

sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
ac = sched.alphas_cumprod
all_snr = (torch.sqrt(ac) / torch.sqrt(1.0 - ac)) ** 2

timesteps = torch.tensor([0, 1, 17, 250, 499, 500, 777, 998, 999])
out = {"timesteps": timesteps.float()}
snr_t = torch.stack([all_snr[t] for t in timesteps])
snr_t = torch.minimum(snr_t, torch.ones_like(snr_t) * 1000)
out["debiased.epsilon"] = 1 / torch.sqrt(snr_t)
out["debiased.v_prediction"] = 1 / (snr_t + 1)


def get_timesteps(min_timestep, max_timestep, b_size):
    if min_timestep < max_timestep:
        return torch.randint(min_timestep, max_timestep, (b_size,), device="cpu")
    return torch.full((b_size,), max_timestep, device="cpu")


# The draw of one step: noise like the latents, then the timesteps, from one generator.
for name, (lo, hi) in {"range": (200, 800), "fixed": (500, 500), "full": (0, 1000)}.items():
    torch.manual_seed(99)
    latents = torch.zeros(3, 4, 2, 2)
    noise = torch.randn_like(latents)
    ts = get_timesteps(lo, hi, 3)
    out[f"{name}.noise"] = noise
    out[f"{name}.timesteps"] = ts.float()
save("timestepweights", out)
