"""KOALA-Lightning sampling settings end to end: diffusers' StableDiffusionXLPipeline with
EulerDiscreteScheduler and timestep_spacing="trailing", 10 steps, guidance 3.5 (the
KOALA-Lightning model card's settings, while its folder's scheduler_config.json says
"leading"), on the tiny pipeline that `koalabooth model init --preset tiny --seed 0` writes.

Usage: fixtures_lightning.py [KOALABOOTH_BINARY]  (or env KB_BIN; default
.build/debug/koalabooth from the repository root).

Writes Tests/Fixtures/lightning.safetensors, per case `<case>.`:
  image      [count, H, W, 3] 8-bit values (as numpy_to_pil rounds output_type="np"), float16
  latents    [count, 4, H/8, W/8] final denoised latents (output_type="latent")
  timesteps  [10] the scheduler's timesteps, sigmas [11] its sigmas
"""
import os

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from safetensors.torch import save_file

from common import FIXTURES, ROOT, tiny_pipeline

SIZE = 64
STEPS = 10
GUIDANCE = 3.5

# name: (prompt, negative prompt or None, seed)
CASES = {
    "trailing_noneg_seed42": ("a photo of a koala wearing sunglasses", None, 42),
    "trailing_neg_seed3": ("a koala astronaut", "blurry, low quality", 3),
}


def main():
    out = {}
    with tiny_pipeline() as (pipe, model):
        assert pipe.scheduler.config.timestep_spacing == "leading", "the folder should say leading, as KOALA-Lightning's does"
        # The model card's scheduler: the folder's config with trailing spacing.
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
        for name, (prompt, negative, seed) in CASES.items():
            results = {}
            for output_type in ("np", "latent"):
                with torch.no_grad():
                    results[output_type] = pipe(prompt=prompt, negative_prompt=negative, num_inference_steps=STEPS,
                                                guidance_scale=GUIDANCE, width=SIZE, height=SIZE, output_type=output_type,
                                                generator=torch.Generator().manual_seed(seed)).images
            image = (torch.from_numpy(results["np"]) * 255).round().to(torch.uint8)
            out[f"{name}.image"] = image.to(torch.float16)
            out[f"{name}.latents"] = results["latent"].float()
            out[f"{name}.timesteps"] = pipe.scheduler.timesteps.float()
            out[f"{name}.sigmas"] = pipe.scheduler.sigmas.float()
    path = os.path.join(FIXTURES, "lightning.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(out)} tensors)")


if __name__ == "__main__":
    main()
