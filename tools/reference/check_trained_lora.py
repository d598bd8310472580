"""End-to-end check of a LoRA that `koalabooth train` writes: diffusers must draw with it
what `koalabooth generate --lora` draws.

With the built `koalabooth` it makes the tiny model (`model init --preset tiny`), a
subject from subjects/robot-toy, and trains it twice: with recipes/tiny.toml (U-Net
LoRA) and with a copy that sets `model.lora.text_encoders = true` (U-Net and both text
encoders). For each final LoRA file it then draws one image with
`koalabooth generate --model tiny --lora FILE` and one with
`StableDiffusionXLPipeline.from_pretrained(tiny).load_lora_weights(FILE)` (same prompt,
seed, steps, DPM-Solver++ scheduler, guidance, size) and reports the mean and max
absolute pixel difference (0..255). It also reports how far the LoRA moves diffusers'
image from the base model's, so a LoRA that did not load cannot pass unnoticed.

Usage (repository root, after `swift build`):
    /root/.cache/koalabooth-refenv/bin/python tools/reference/check_trained_lora.py [--koalabooth PATH]
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file
from transformers.utils import logging as transformers_logging

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROMPT = "a photo of sks toy on the beach"


def run(args, env):
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def diffusers_image(model, lora, a):
    pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=torch.float32)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    loaded = {}
    if lora:
        pipe.load_lora_weights(lora)
        file = load_file(lora)
        for name in ("unet", "text_encoder", "text_encoder_2"):
            params = {k: p for k, p in getattr(pipe, name).named_parameters() if "lora_" in k}
            ups = [k for k in file if k.startswith(name + ".") and k.endswith("lora_B.weight")]
            # Every lora_B of the file must be in the model with the file's values.
            matched = 0
            for k in ups:
                module = k[len(name) + 1:-len(".lora_B.weight")]
                cands = [p for n, p in params.items() if "lora_B" in n and
                         (n.startswith(module + ".") or n.startswith(module.replace("text_model.", "", 1) + "."))]
                if cands and torch.equal(cands[0].detach(), file[k]):
                    matched += 1
            loaded[name] = (matched, len(ups))
    out = pipe(prompt=PROMPT, num_inference_steps=a.steps, guidance_scale=a.guidance, width=a.size, height=a.size,
               generator=torch.Generator().manual_seed(a.seed), output_type="np").images[0]
    return (out * 255).round().clip(0, 255).astype(np.uint8), loaded


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--koalabooth", default=os.path.join(ROOT, ".build", "debug", "koalabooth"))
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--learning-rate", default="3e-2", help="high, so the tiny LoRA visibly changes the image")
    p.add_argument("--steps", type=int, default=8, help="denoising steps")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    kb = os.path.abspath(a.koalabooth)
    if not os.access(kb, os.X_OK):
        sys.exit(f"{kb} is not an executable; build with `swift build` or pass --koalabooth")
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, KOALABOOTH_HOME=os.path.join(d, "home"))
        model = os.path.join(d, "tiny")
        run([kb, "model", "init", "--preset", "tiny", "--seed", "0", "--out", model], env)
        photos = sorted(glob.glob(os.path.join(ROOT, "subjects", "robot-toy", "*.jpg")))
        run([kb, "subject", "create", "robo", "--class", "toy", "--token", "sks"] + photos, env)

        tiny = open(os.path.join(ROOT, "recipes", "tiny.toml")).read()
        assert 'targets = ["attention"]' in tiny
        te = os.path.join(d, "tiny-text-encoders.toml")
        with open(te, "w") as f:
            f.write(tiny.replace('targets = ["attention"]', 'targets = ["attention"]\ntext_encoders = true'))
        variants = [("recipes/tiny.toml", os.path.join(ROOT, "recipes", "tiny.toml")),
                    ("tiny.toml + model.lora.text_encoders = true", te)]

        base, _ = diffusers_image(model, None, a)
        worst = 0
        for label, recipe in variants:
            out = run([kb, "train", "robo", "--recipe", recipe, "--model", model, "--max-steps", str(a.max_steps),
                       "--learning-rate", a.learning_rate], env)
            lora = re.findall(r"^checkpoint step \d+: (.+)$", out, re.M)[-1]
            evals = re.findall(r"^eval loss ([0-9.]+)", out, re.M)
            png = os.path.join(d, "koalabooth.png")
            run([kb, "generate", "--model", model, "--lora", lora, "--prompt", PROMPT, "--seed", str(a.seed),
                 "--steps", str(a.steps), "--scheduler", "dpm-solver++", "--guidance", str(a.guidance),
                 "--width", str(a.size), "--height", str(a.size), "--output", png], env)
            ours = np.asarray(Image.open(png).convert("RGB"))
            theirs, loaded = diffusers_image(model, lora, a)
            diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
            moved = np.abs(theirs.astype(np.int16) - base.astype(np.int16))
            keys = load_file(lora).keys()
            print(f"== {label}")
            print(f"   trained {a.max_steps} steps, lr {a.learning_rate}: eval loss {evals[0]} -> {evals[-1]}")
            print(f"   LoRA file {os.path.basename(lora)}: " + ", ".join(
                f"{c} {sum(k.startswith(c + '.') for k in keys)} tensors" for c in ("unet", "text_encoder", "text_encoder_2")))
            print("   diffusers load_lora_weights: " + ", ".join(f"{c} {m}/{n} lora_B loaded" for c, (m, n) in loaded.items()))
            print(f"   koalabooth generate --lora vs diffusers ({a.size}x{a.size}, {a.steps} DPM-Solver++ steps, "
                  f"guidance {a.guidance}, seed {a.seed}): mean |diff| {diff.mean():.4f}, max |diff| {diff.max()} (0..255)")
            print(f"   the LoRA moves diffusers' image from the base model's by mean {moved.mean():.2f}, max {moved.max()}")
            ok = all(m == n for m, n in loaded.values()) and moved.max() > 8 * max(1, diff.max())
            worst = max(worst, diff.max())
            if not ok:
                sys.exit("FAILED: the LoRA did not load fully in diffusers, or barely changes the image")
        print("OK" if worst <= 2 else f"FAILED: max difference {worst} > 2")
        sys.exit(0 if worst <= 2 else 1)


if __name__ == "__main__":
    main()
