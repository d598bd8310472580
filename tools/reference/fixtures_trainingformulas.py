"""Training and guidance formulas beside the schedulers (add_noise, get_velocity and
compute_snr itself are in fixtures_schedulers.py): the min-SNR-gamma loss weights of
train_dreambooth_lora_sdxl.py (epsilon and v-prediction, on diffusers' `compute_snr`),
the script's noise-offset draw (noise, then offset noise, then timesteps from one
generator), and the SDXL pipeline's `rescale_noise_cfg`.
Writes Tests/Fixtures/trainingformulas.safetensors."""
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import rescale_noise_cfg
from common import randn, save

# SDXL's training schedule (the tiny model's scheduler_config.json uses the same betas).
sdxl = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
timesteps = torch.tensor([0, 1, 17, 250, 499, 500, 777, 998, 999])
gamma = 5.0
out = {"timesteps": timesteps.float()}

for name, extra in [("sdxl", {}), ("zsnr", {"rescale_betas_zero_snr": True})]:
    sched = DDPMScheduler(**sdxl, **extra)
    snr = compute_snr(sched, timesteps)
    out[f"{name}.snr"] = snr
    # Zero terminal SNR makes snr[999] = 0: only v-prediction (its partner) is defined there.
    for pred in ["epsilon", "v_prediction"] if name == "sdxl" else ["v_prediction"]:
        # As train_dreambooth_lora_sdxl.py writes it (v-prediction divides by snr + 1).
        w = torch.stack([snr, gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
        w = w / snr if pred == "epsilon" else w / (snr + 1)
        out[f"{name}.minsnr.{pred}"] = w

# The noise-offset draw of the training scripts, from one torch generator seeded 1234:
# noise = randn_like(latents); noise += offset * randn(b, c, 1, 1); timesteps = randint.
torch.manual_seed(1234)
latents = torch.zeros(2, 4, 3, 5)
noise = torch.randn_like(latents)
noise = noise + 0.05 * torch.randn((2, 4, 1, 1))
ts = torch.randint(0, 1000, (2,))
out["offset.noise"] = noise
out["offset.timesteps"] = ts.float()

cfg = randn(2, 4, 6, 5, seed=21, scale=2.0)
text = randn(2, 4, 6, 5, seed=22)
for r in [0.0, 0.3, 0.7, 1.0]:
    out[f"rescale.{r}"] = rescale_noise_cfg(cfg, text, guidance_rescale=r)
out["rescale.cfg"] = cfg
out["rescale.text"] = text
save("trainingformulas", out)
