"""Tiled VAE decode in text-to-image: diffusers' StableDiffusionXLPipeline with
`pipe.vae.enable_tiling()` (what `enable_vae_tiling()` does) and without, on the tiny
pipeline that `koalabooth model init --preset tiny --seed 0` writes, at 64x96 px: the
tiny VAE's tiles are 64 px (its sample_size), so the 8x12 latents decode as 2x2
overlapping tiles, the right-hand ones cut off by the image edge.

Usage: fixtures_vaetiling.py [KOALABOOTH_BINARY]  (or env KB_BIN; default
.build/debug/koalabooth from the repository root).

Writes Tests/Fixtures/vaetiling.safetensors, per case `<case>.`:
  tiled.image    [count, H, W, 3] 8-bit values with tiling (as numpy_to_pil rounds
                 output_type="np"), float16
  untiled.image  the same without tiling (diffusers' default)
  latents        [count, 4, H/8, W/8] final denoised latents (tiling does not touch them)
and `init_latents` [1, 4, 12, 8]: the unscaled standard-normal start of the "latents" case.
"""
import os

import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler
from safetensors.torch import save_file

from common import FIXTURES, ROOT, image_8bit, text_to_image, tiny_pipeline

WIDTH, HEIGHT = 64, 96
STEPS = 4
GUIDANCE = 7.5

# name: (scheduler, prompt, negative prompt or None, start: "latents" or seed, count)
CASES = {
    "dpm_neg_latents": ("dpm", "a photo of a koala wearing sunglasses", "blurry, low quality", "latents", 1),
    "euler_noneg_seed5": ("euler", "a koala astronaut", None, 5, 2),
}


def main():
    out = {}
    with tiny_pipeline() as (pipe, model):
        assert pipe.vae.tile_sample_min_size == 64 and pipe.vae.tile_latent_min_size == 8
        schedulers = {
            "dpm": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config),
            "euler": EulerDiscreteScheduler.from_config(pipe.scheduler.config),
        }
        init = torch.randn(1, 4, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(100))
        out["init_latents"] = init
        for name, (sched, prompt, negative, start, count) in CASES.items():
            results = {}
            for tiling in ("tiled", "untiled"):
                for output_type in ("np", "latent"):
                    if tiling == "tiled":
                        pipe.vae.enable_tiling()
                    else:
                        pipe.vae.disable_tiling()
                    pipe.scheduler = schedulers[sched]
                    results[tiling, output_type] = text_to_image(pipe, prompt, negative, start, count, init, steps=STEPS,
                                                                 guidance=GUIDANCE, width=WIDTH, height=HEIGHT,
                                                                 output_type=output_type)
            assert torch.equal(results["tiled", "latent"], results["untiled", "latent"]), "tiling must only change the decode"
            for tiling in ("tiled", "untiled"):
                out[f"{name}.{tiling}.image"] = image_8bit(results[tiling, "np"])
            out[f"{name}.latents"] = results["tiled", "latent"].float()
            # Tiling must really change the picture, or the tiled tests would prove nothing.
            seams = (out[f"{name}.tiled.image"].float() - out[f"{name}.untiled.image"].float()).abs().max()
            assert seams >= 8, f"{name}: tiled and untiled images differ by only {seams}"
    path = os.path.join(FIXTURES, "vaetiling.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(out)} tensors)")


if __name__ == "__main__":
    main()
