"""Shared helpers for the fixture scripts: deterministic inputs and saving.

Every fixture script writes one safetensors file under Tests/Fixtures/ holding the
inputs, outputs and gradients a Swift test reads back. All tensors are float32.
"""
import contextlib
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")

torch.set_num_threads(1)  # deterministic reductions in the reference data


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed, scale=1.0):
    return torch.randn(*shape, generator=gen(seed)) * scale


def save(name, tensors):
    os.makedirs(FIXTURES, exist_ok=True)
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    path = os.path.join(FIXTURES, f"{name}.safetensors")
    save_file(out, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(out)} tensors)")


def forward_backward(prefix, fn, inputs, seed):
    """Runs fn(**inputs), backprops a random grad_out, returns the fixture entries
    prefix.<input>, prefix.out, prefix.grad_out, prefix.grad_<input>."""
    leaves = {k: v.clone().requires_grad_(v.dtype.is_floating_point) for k, v in inputs.items()}
    out = fn(**leaves)
    grad_out = randn(*out.shape, seed=seed)
    out.backward(grad_out)
    entries = {f"{prefix}.{k}": v.detach() for k, v in leaves.items()}
    entries[f"{prefix}.out"] = out.detach()
    entries[f"{prefix}.grad_out"] = grad_out
    for k, v in leaves.items():
        if v.grad is not None:
            entries[f"{prefix}.grad_{k}"] = v.grad
    return entries


@contextlib.contextmanager
def tiny_pipeline():
    """Yields (diffusers' StableDiffusionXLPipeline, its folder) for the tiny pipeline that
    `koalabooth model init --preset tiny --seed 0` writes: the Swift tests' tiny model.
    The executable is the script's first argument, else $KB_BIN, else .build/debug/koalabooth."""
    from diffusers import StableDiffusionXLPipeline

    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KB_BIN", os.path.join(ROOT, ".build/debug/koalabooth"))
    binary = os.path.abspath(binary)
    if not os.path.exists(binary):
        sys.exit(f"{binary} does not exist: build it first (swift build) or pass its path")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        subprocess.run([binary, "model", "init", "--preset", "tiny", "--seed", "0", "--out", model], check=True)
        pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        yield pipe, model


def text_to_image(pipe, prompt, negative, start, count, init, *, steps, guidance, width, height, output_type):
    """One call of `pipe` (its scheduler set by the caller) for a fixture case, without
    gradients: `start` is "latents" (`init`, repeated for each of the `count` images) or
    the seed of a torch.Generator(). Returns the pipeline output's images."""
    kwargs = dict(prompt=prompt, negative_prompt=negative, num_inference_steps=steps,
                  guidance_scale=guidance, width=width, height=height,
                  num_images_per_prompt=count, output_type=output_type)
    if start == "latents":
        kwargs["latents"] = init.repeat(count, 1, 1, 1)
    else:
        kwargs["generator"] = torch.Generator().manual_seed(start)
    with torch.no_grad():
        return pipe(**kwargs).images


def image_8bit(images):
    """output_type="np" images as numpy_to_pil rounds them ((images * 255).round().astype("uint8")),
    stored as float16."""
    return (torch.from_numpy(images) * 255).round().to(torch.uint8).to(torch.float16)
