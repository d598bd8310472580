"""Checks that a LoRA file KoalaBooth writes loads in diffusers the way
`StableDiffusionXLPipeline.load_lora_weights` loads a U-Net LoRA, and gives PEFT's loss.

Runs the Swift test that exports the fixture's "wide" adapter (attention, feed-forward
and resnet-conv LoRA, r=2, alpha=3) in diffusers format, then loads it with
`StableDiffusionXLPipeline.lora_state_dict` + `load_lora_into_unet` (what
`load_lora_weights` calls for the U-Net) into the fixture's tiny U-Net and compares the
training loss with the one PEFT computed for the same weights.

Usage (repository root, after `swift build --build-tests`):
    /root/.cache/koalabooth-refenv/bin/python tools/reference/check_lora_load.py
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
sys.argv = sys.argv[:1]
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file
from common import ROOT

import fixtures_loratrain as fx  # the same tiny model and inputs

with tempfile.TemporaryDirectory() as d:
    env = dict(os.environ, KOALABOOTH_LORA_EXPORT_DIR=d)
    subprocess.run(["swift", "test", "--skip-build", "--filter", "LoRATests/testSavedAdaptersLoadBack"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    path = os.path.join(d, "diffusers.safetensors")
    state_dict, network_alphas, metadata = StableDiffusionXLPipeline.lora_state_dict(path, return_lora_metadata=True)
    unet = fx.base_model()
    StableDiffusionXLPipeline.load_lora_into_unet(state_dict, network_alphas, unet, metadata=metadata)
    (adapter, cfg), = unet.peft_config.items()
    print(f"loaded adapter {adapter}: r={cfg.r} lora_alpha={cfg.lora_alpha} targets={sorted(cfg.target_modules)}")
    with torch.no_grad():
        loss = fx.loss_of(unet.eval()).item()
    expected = load_file(os.path.join(ROOT, "Tests", "Fixtures", "loratrain.safetensors"))["wide.loss"].item()
    print(f"loss with the Swift-written LoRA in diffusers: {loss:.7f}; PEFT reference: {expected:.7f}")
    assert abs(loss - expected) < 1e-5 * max(1, abs(expected)), "loss differs"
    print("OK")
