"""LoRA reference: a PEFT LoRA on the tiny pipeline (`koalabooth model init --preset tiny
--seed 0`), saved the ways other tools save one, and what diffusers makes with it.

Usage: fixtures_lora.py [KOALABOOTH_BINARY]  (or env KB_BIN; default
.build/debug/koalabooth from the repository root).

Writes Tests/Fixtures/lora/:
  peft.safetensors      StableDiffusionXLPipeline.save_lora_weights of the PEFT state dicts
                        (lora_A/lora_B keys, r/lora_alpha in `lora_adapter_metadata`)
  diffusers.safetensors the same after convert_state_dict_to_diffusers (lora.down/lora.up,
                        lora_linear_layer.down/up), as diffusers' training scripts save it
  kohya.safetensors     the same LoRA in kohya naming (lora_unet_…, lora_te1_…, lora_te2_…,
                        lora_down/lora_up, per-module `.alpha` tensors)
and Tests/Fixtures/lora.safetensors:
  image                 [1, 64, 64, 3] 8-bit values: load_lora_weights(peft) then the
                        "dpm_neg_latents" case of fixtures_pipeline.py (same start latents)
  fused.<component>.<key>  some weights after pipe.fuse_lora(lora_scale=0.5)
"""
import json
import os

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from common import FIXTURES, ROOT, tiny_pipeline

# transformers 5.24 asks for peft >= 0.22, newer than any published peft (0.21.2 is the
# latest); its LoRA code paths work with 0.21, so the version gate is lifted here.
import transformers.integrations.peft as _tf_peft  # noqa: E402
_tf_peft.check_peft_version = lambda min_version: None

PROMPT = "a photo of a koala wearing sunglasses"
NEGATIVE = "blurry, low quality"
SIZE, STEPS, GUIDANCE = 64, 4, 7.5
RANK, ALPHA = 4, 8
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
FUSED = {
    "unet": ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
             "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
             "down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_out.0.weight",
             "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight"],
    "text_encoder": ["text_model.encoder.layers.0.self_attn.q_proj.weight"],
    "text_encoder_2": ["text_model.encoder.layers.1.self_attn.out_proj.weight"],
}


def kohya(state, prefix):
    """PEFT keys `<module>.lora_A.weight` -> `lora_<prefix>_<module with _>.lora_down.weight` + alpha,
    as kohya's sd-scripts name them."""
    out = {}
    for key, value in state.items():
        module, kind = key.rsplit(".lora_", 1)
        if prefix != "unet" and not module.startswith("text_model."):
            module = "text_model." + module  # kohya names text encoder modules by checkpoint path
        name = f"lora_{prefix}_" + module.replace(".", "_")
        out[f"{name}.lora_down.weight" if kind == "A.weight" else f"{name}.lora_up.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(float(ALPHA))
    return out


def generate(pipe, init):
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        image = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     width=SIZE, height=SIZE, latents=init, output_type="np").images
    return (torch.from_numpy(image) * 255).round().to(torch.uint8)


def fused(pipe):
    out = {}
    for component, keys in FUSED.items():
        module = getattr(pipe, component)
        sd = {k.replace(".base_layer", ""): v for k, v in module.state_dict().items()}
        for k in keys:
            # transformers 5 drops CLIPTextModel's `text_model.` level from module paths
            # (checkpoints keep it).
            value = sd[k] if k in sd else sd[k.removeprefix("text_model.")]
            out[f"fused.{component}.{k}"] = value.detach().clone()
    return out


def main():
    lora_dir = os.path.join(FIXTURES, "lora")
    os.makedirs(lora_dir, exist_ok=True)
    out = {}
    with tiny_pipeline() as (pipe, model):
        init = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(100))
        base = generate(pipe, init)

        # Train-like LoRA: PEFT adapters with seeded random A and (non-zero) B.
        g = torch.Generator().manual_seed(7)
        components = {"unet": UNET_TARGETS, "text_encoder": TE_TARGETS, "text_encoder_2": TE_TARGETS}
        layers, metadata = {}, {}
        for component, targets in components.items():
            module = getattr(pipe, component)
            config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, init_lora_weights=True)
            module.add_adapter(config)
            with torch.no_grad():
                for name, p in module.named_parameters():
                    if "lora_A" in name:
                        p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
                    elif "lora_B" in name:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            layers[component] = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(module).items()}
            metadata[component] = module.peft_config["default"].to_dict()

        def save(weight_name, convert):
            conv = convert_state_dict_to_diffusers if convert else (lambda d: d)
            StableDiffusionXLPipeline.save_lora_weights(
                lora_dir, weight_name=weight_name,
                unet_lora_layers=conv(layers["unet"]), text_encoder_lora_layers=conv(layers["text_encoder"]),
                text_encoder_2_lora_layers=conv(layers["text_encoder_2"]),
                unet_lora_adapter_metadata=metadata["unet"], text_encoder_lora_adapter_metadata=metadata["text_encoder"],
                text_encoder_2_lora_adapter_metadata=metadata["text_encoder_2"])
        save("peft.safetensors", False)
        save("diffusers.safetensors", True)
        kohya_sd = {**kohya(layers["unet"], "unet"), **kohya(layers["text_encoder"], "te1"),
                    **kohya(layers["text_encoder_2"], "te2")}
        save_file({k: v.contiguous() for k, v in kohya_sd.items()}, os.path.join(lora_dir, "kohya.safetensors"))

        # A fresh pipeline, as a user loads a LoRA file.
        pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(lora_dir, weight_name="peft.safetensors")
        image = generate(pipe, init)
        mad = (image.float() - base.float()).abs().mean().item()
        print(f"LoRA changes the image by {mad:.2f}/255 on average")
        assert mad > 3, "the LoRA barely changes the image: the parity test could not fail"
        out["image"] = image.to(torch.float16)
        pipe.fuse_lora(lora_scale=0.5)
        out.update(fused(pipe))

        # The other two files must give diffusers the same weights (checks the conversions).
        for name in ("diffusers.safetensors", "kohya.safetensors"):
            other = StableDiffusionXLPipeline.from_pretrained(model, dtype=torch.float32)
            try:
                other.load_lora_weights(lora_dir, weight_name=name)
                other.fuse_lora(lora_scale=0.5)
                for k, v in fused(other).items():
                    assert torch.allclose(v, out[k], atol=1e-6), f"{name}: {k} differs"
                print(f"diffusers fuses {name} to the same weights")
            except Exception as e:  # diffusers' kohya converter may not know every naming
                print(f"note: diffusers could not check {name}: {e}")

    path = os.path.join(FIXTURES, "lora.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    for f in sorted(os.listdir(lora_dir)):
        print(f"wrote Tests/Fixtures/lora/{f} ({os.path.getsize(os.path.join(lora_dir, f)) / 1024:.1f} KiB)")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(out)} tensors)")


if __name__ == "__main__":
    main()
