"""Noise schedulers (diffusers): timesteps, sigmas and every step output of
DPMSolverMultistepScheduler, EulerDiscreteScheduler and DDIMScheduler built from SDXL's
scheduler config with the overrides the CLI exposes; DDPM training noising
(add_noise, get_velocity, compute_snr); the beta schedules.

The sampling loop is the SDXL pipeline's: x = sample * init_noise_sigma, then per step
input = scale_model_input(x, t), model_output = 0.3 * input + table[k], x = step(...).
`table` (one fixed random tensor per step) is saved so Swift feeds the same values.
Each variant's full diffusers config goes to schedulers.json, which the Swift test
parses with its own SchedulerConfig.
"""
import json
import os
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.training_utils import compute_snr
from common import FIXTURES, randn, save

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

SHAPE = (1, 4, 2, 2)
STEPS = (10, 25, 50)
# Variants the CLI exposes run 10, 25 and 50 steps; the rest (config-file options) 10 and 25.
CLI = {"dpm", "dpm_order1", "dpm_order3", "dpm_heun", "dpm_karras", "dpm_euler_at_final",
       "dpm_lower_order_final_off", "dpm_sigma_min", "dpm_vpred", "euler", "euler_karras", "euler_vpred",
       "ddim", "ddim_vpred"}
CLASSES = {"dpm": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler, "ddim": DDIMScheduler}

VARIANTS = {
    # DPM-Solver++ (the CLI's default scheduler) and its options.
    "dpm": ("dpm", {}),
    "dpm_order1": ("dpm", {"solver_order": 1}),
    "dpm_order3": ("dpm", {"solver_order": 3}),
    "dpm_heun": ("dpm", {"solver_type": "heun"}),
    "dpm_karras": ("dpm", {"use_karras_sigmas": True}),
    "dpm_karras_order3_heun": ("dpm", {"use_karras_sigmas": True, "solver_order": 3, "solver_type": "heun"}),
    "dpm_euler_at_final": ("dpm", {"euler_at_final": True}),
    "dpm_lower_order_final_off": ("dpm", {"lower_order_final": False}),
    "dpm_sigma_min": ("dpm", {"final_sigmas_type": "sigma_min"}),
    "dpm_order3_full": ("dpm", {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}),
    "dpm_vpred": ("dpm", {"prediction_type": "v_prediction"}),
    "dpm_sample_pred": ("dpm", {"prediction_type": "sample"}),
    "dpm_linspace": ("dpm", {"timestep_spacing": "linspace"}),
    "dpm_trailing": ("dpm", {"timestep_spacing": "trailing"}),
    "dpm_karras_trailing": ("dpm", {"use_karras_sigmas": True, "timestep_spacing": "trailing"}),
    "dpm_zero_snr_vpred": ("dpm", {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                                   "prediction_type": "v_prediction"}),
    "dpm_cosine": ("dpm", {"beta_schedule": "squaredcos_cap_v2"}),
    "dpm_linear_betas": ("dpm", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
    # Euler (the paper's default).
    "euler": ("euler", {}),
    "euler_karras": ("euler", {"use_karras_sigmas": True}),
    "euler_vpred": ("euler", {"prediction_type": "v_prediction"}),
    "euler_linspace": ("euler", {"timestep_spacing": "linspace"}),
    "euler_trailing": ("euler", {"timestep_spacing": "trailing"}),
    "euler_karras_trailing": ("euler", {"use_karras_sigmas": True, "timestep_spacing": "trailing"}),
    "euler_sigma_min": ("euler", {"final_sigmas_type": "sigma_min"}),
    "euler_zero_snr_vpred": ("euler", {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                                       "prediction_type": "v_prediction"}),
    # DDIM, eta 0.
    "ddim": ("ddim", {}),
    "ddim_vpred": ("ddim", {"prediction_type": "v_prediction"}),
    "ddim_linspace": ("ddim", {"timestep_spacing": "linspace"}),
    "ddim_trailing": ("ddim", {"timestep_spacing": "trailing"}),
    "ddim_alpha_one_clip": ("ddim", {"set_alpha_to_one": True, "clip_sample": True, "clip_sample_range": 1.5}),
    "ddim_cosine": ("ddim", {"beta_schedule": "squaredcos_cap_v2"}),
}

sample = randn(*SHAPE, seed=1)
table = randn(max(STEPS), *SHAPE, seed=2)
entries = {"sample": sample, "table": table}
configs = {}

for name, (kind, overrides) in VARIANTS.items():
    cls = CLASSES[kind]
    steps = STEPS if name in CLI else STEPS[:2]
    configs[name] = {"scheduler": kind, "steps": list(steps),
                     "config": json.loads(cls.from_config(SDXL, **overrides).to_json_string())}
    for n in steps:
        s = cls.from_config(SDXL, **overrides)
        s.set_timesteps(n)
        x = sample * s.init_noise_sigma
        outs = []
        for k, t in enumerate(s.timesteps):
            model_output = 0.3 * s.scale_model_input(x, t) + table[k]
            x = s.step(model_output, t, x).prev_sample
            outs.append(x)
        p = f"{name}.{n}"
        entries[f"{p}.timesteps"] = s.timesteps.to(torch.float32)
        if hasattr(s, "sigmas"):
            entries[f"{p}.sigmas"] = s.sigmas
        entries[f"{p}.init_noise_sigma"] = torch.tensor([float(s.init_noise_sigma)])
        entries[f"{p}.outputs"] = torch.stack(outs)

# Beta schedules (DDIM/DDPM keep alphas_cumprod[-1] = 0 under rescale_betas_zero_snr).
for name, overrides in {
    "scaled_linear": {},
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "zero_snr": {"rescale_betas_zero_snr": True},
}.items():
    s = DDPMScheduler.from_config(SDXL, **overrides)
    entries[f"schedule.{name}.betas"] = s.betas
    entries[f"schedule.{name}.alphas_cumprod"] = s.alphas_cumprod

# Training-side noising, as train_dreambooth_lora_sdxl.py uses DDPMScheduler.
ddpm = DDPMScheduler.from_config(SDXL)
x0 = randn(3, 4, 2, 2, seed=3)
noise = randn(3, 4, 2, 2, seed=4)
timesteps = torch.tensor([0, 517, 999])
entries |= {
    "ddpm.x0": x0, "ddpm.noise": noise, "ddpm.timesteps": timesteps.float(),
    "ddpm.noisy": ddpm.add_noise(x0, noise, timesteps),
    "ddpm.velocity": ddpm.get_velocity(x0, noise, timesteps),
    "ddpm.snr": compute_snr(ddpm, torch.arange(1000)),
}

save("schedulers", entries)
path = os.path.join(FIXTURES, "schedulers.json")
with open(path, "w") as f:
    json.dump({"sdxl_config": SDXL, "variants": configs}, f, indent=1, sort_keys=True)
print(f"wrote Tests/Fixtures/schedulers.json ({os.path.getsize(path) / 1024:.1f} KiB)")
