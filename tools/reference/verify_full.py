"""Full-size check (`just verify-full`, not in CI): a KOALA-700M U-Net with random
weights written by diffusers, and one forward at 256x256 (latent 32x32) by diffusers,
for the Swift side (VerifyFullTests) to load and compare.

Usage: verify_full.py OUTDIR  — writes OUTDIR/model_index.json, OUTDIR/unet/ and
OUTDIR/io.safetensors (inputs and diffusers' output).
"""
import json
import os
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
config = dict(
    sample_size=128, in_channels=4, out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    mid_block_type=None, block_out_channels=[320, 640, 1280], layers_per_block=1,
    transformer_layers_per_block=[1, 2, 5], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
unet = UNet2DConditionModel(**config).eval()
n = sum(p.numel() for p in unet.parameters())
print(f"KOALA-700M U-Net: {n:,} parameters")
assert n == 782_822_724, n
unet.save_pretrained(os.path.join(out, "unet"))
with open(os.path.join(out, "model_index.json"), "w") as f:
    json.dump({"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}, f)

g = torch.Generator().manual_seed(1)
io = {
    "sample": torch.randn(1, 4, 32, 32, generator=g),
    "timestep": torch.tensor([500.0]),
    "encoder_hidden_states": torch.randn(1, 77, 2048, generator=g),
    "text_embeds": torch.randn(1, 1280, generator=g),
    "time_ids": torch.tensor([[256.0, 256.0, 0.0, 0.0, 256.0, 256.0]]),
}
with torch.no_grad():
    io["out"] = unet(io["sample"], io["timestep"], encoder_hidden_states=io["encoder_hidden_states"],
                     added_cond_kwargs={"text_embeds": io["text_embeds"], "time_ids": io["time_ids"]}).sample
save_file(io, os.path.join(out, "io.safetensors"))
print(f"wrote {out}: output std {io['out'].std():.4f}")
