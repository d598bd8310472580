"""End-to-end text-to-image reference: diffusers' StableDiffusionXLPipeline on the tiny
pipeline that `koalabooth model init --preset tiny --seed 0` writes.

Usage: fixtures_pipeline.py [KOALABOOTH_BINARY]  (or env KB_BIN; default
.build/debug/koalabooth from the repository root). The Swift tests rebuild the same
folder with the same command (the weights are a deterministic function of the seed) and
compare against what this script stores, per case `<case>.`:
  image    [count, H, W, 3] 8-bit values (as numpy_to_pil rounds output_type="np"), float16
  latents  [count, 4, H/8, W/8] final denoised latents (output_type="latent")
and `init_latents` [1, 4, 8, 8]: the unscaled standard-normal start given to the
"latents" cases. Cases named `*_seed<S>` draw their start from
torch.Generator().manual_seed(S) instead.
"""
import os

import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler
from safetensors.torch import save_file

from common import FIXTURES, ROOT, image_8bit, text_to_image, tiny_pipeline

PROMPT = "a photo of a koala wearing sunglasses"
NEGATIVE = "blurry, low quality"
SIZE = 64
STEPS = 4
GUIDANCE = 7.5

# name: (scheduler, prompt, negative prompt or None, start: "latents" or seed, count)
CASES = {
    "dpm_neg_latents": ("dpm", PROMPT, NEGATIVE, "latents", 1),
    "dpm_noneg_latents": ("dpm", "a koala astronaut", None, "latents", 1),
    "euler_neg_latents": ("euler", PROMPT, NEGATIVE, "latents", 1),
    "dpm_neg_seed42": ("dpm", PROMPT, NEGATIVE, 42, 1),
    "euler_noneg_seed7": ("euler", "a koala astronaut", None, 7, 2),
    "dpmkarras_neg_latents": ("dpmkarras", PROMPT, NEGATIVE, "latents", 1),
}


def main():
    out = {}
    with tiny_pipeline() as (pipe, model):
        schedulers = {
            "dpm": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config),
            "euler": EulerDiscreteScheduler.from_config(pipe.scheduler.config),
            "dpmkarras": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True),
        }
        init = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(100))
        out["init_latents"] = init
        for name, (sched, prompt, negative, start, count) in CASES.items():
            results = {}
            for output_type in ("np", "latent"):
                pipe.scheduler = schedulers[sched]
                results[output_type] = text_to_image(pipe, prompt, negative, start, count, init, steps=STEPS,
                                                     guidance=GUIDANCE, width=SIZE, height=SIZE, output_type=output_type)
            out[f"{name}.image"] = image_8bit(results["np"])
            out[f"{name}.latents"] = results["latent"].float()
    path = os.path.join(FIXTURES, "pipeline.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(out)} tensors)")


if __name__ == "__main__":
    main()
