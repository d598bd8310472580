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
import subprocess
import sys
import tempfile

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from safetensors.torch import save_file

from common import FIXTURES, ROOT

SIZE = 64
STEPS = 10
GUIDANCE = 3.5

# name: (prompt, negative prompt or None, seed)
CASES = {
    "trailing_noneg_seed42": ("a photo of a koala wearing sunglasses", None, 42),
    "trailing_neg_seed3": ("a koala astronaut", "blurry, low quality", 3),
}


def main():
    # make_fixtures.py runs this with its own arguments (script names), so only a direct run takes one.
    direct = os.path.abspath(sys.argv[0]) == os.path.abspath(__file__)
    binary = sys.argv[1] if direct and len(sys.argv) > 1 else os.environ.get("KB_BIN", os.path.join(ROOT, ".build/debug/koalabooth"))
    binary = os.path.abspath(binary)
    if not os.path.exists(binary):
        sys.exit(f"{binary} does not exist: build it first (swift build) or pass its path")
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        subprocess.run([binary, "model", "init", "--preset", "tiny", "--seed", "0", "--out", model], check=True)
        pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
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
