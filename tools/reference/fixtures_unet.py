"""diffusers UNet2DConditionModel with tiny random weights, in three configurations
that between them take every code path KoalaBooth supports:

- "a": KOALA-700M's structure (no mid block, DownBlock2D first, text_time addition
  embedding, linear projections, per-block transformer depths, attention_head_dim
  list), with output gradients for the input sample, the conditioning and a few
  parameters;
- "b": KOALA-1B / SDXL structure (UNetMidBlock2DCrossAttn, two resnets per down block);
- "c": SD-1.x style (convolutional projections, no addition embedding, one
  attention_head_dim for all blocks, reverse_transformer_layers_per_block,
  flip_sin_to_cos false, freq_shift 1, center_input_sample).

Norm weights and all biases are perturbed so they are non-trivial. Each config is
saved as diffusers wrote it, in the metadata entry "configs" (JSON: case -> config).
"""
import json
import os
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from common import FIXTURES, ROOT, gen, randn

CONFIGS = {
    "a": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=[4, 8, 8], norm_num_groups=2,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], mid_block_type=None,
        layers_per_block=1, transformer_layers_per_block=[1, 1, 2], attention_head_dim=[1, 2, 2],
        cross_attention_dim=6, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=2, projection_class_embeddings_input_dim=6 + 6 * 2,
    ),
    "b": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=[4, 8], norm_num_groups=2,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
        mid_block_type="UNetMidBlock2DCrossAttn", layers_per_block=2, transformer_layers_per_block=[1, 2],
        attention_head_dim=[1, 2], cross_attention_dim=6, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=2, projection_class_embeddings_input_dim=6 + 6 * 2,
    ),
    "c": dict(
        sample_size=8, in_channels=3, out_channels=2, block_out_channels=[4, 8], norm_num_groups=2,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        mid_block_type="UNetMidBlock2DCrossAttn", layers_per_block=1, transformer_layers_per_block=[1, 2],
        reverse_transformer_layers_per_block=[[2, 2], [1, 2]], attention_head_dim=2, cross_attention_dim=6,
        use_linear_projection=False, flip_sin_to_cos=False, freq_shift=1, center_input_sample=True, norm_eps=1e-6,
    ),
}
# (batch, latent size, tokens)
SHAPES = {"a": (2, 16, 5), "b": (2, 8, 5), "c": (1, 8, 3)}
# Parameters whose gradients case "a" records.
GRAD_PARAMS = [
    "conv_in.weight",
    "time_embedding.linear_1.weight",
    "add_embedding.linear_1.bias",
    "down_blocks.0.resnets.0.conv1.weight",
    "down_blocks.2.attentions.0.transformer_blocks.1.attn2.to_k.weight",
    "down_blocks.2.attentions.0.transformer_blocks.1.ff.net.0.proj.weight",
    "up_blocks.0.resnets.1.time_emb_proj.weight",
    "up_blocks.0.upsamplers.0.conv.bias",
    "up_blocks.1.attentions.0.norm.weight",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0.weight",
    "up_blocks.2.resnets.1.conv_shortcut.weight",
    "conv_norm_out.bias",
    "conv_out.weight",
]

entries = {}
configs = {}
for ci, (name, cfg) in enumerate(CONFIGS.items()):
    torch.manual_seed(ci)
    model = UNet2DConditionModel(**cfg).eval()
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("bias") or "norm" in k:
                p.add_(torch.randn(p.shape, generator=gen(p.numel() + len(k))) * 0.1)
    b, s, tokens = SHAPES[name]
    sample = randn(b, cfg["in_channels"], s, s, seed=10 + ci)
    ehs = randn(b, tokens, cfg["cross_attention_dim"], seed=20 + ci)
    timestep = torch.tensor([999.0, 17.5][:b])
    kwargs = {}
    if cfg.get("addition_embed_type") == "text_time":
        text_embeds = randn(b, 6, seed=30 + ci)
        time_ids = torch.tensor([[1024.0, 768.0, 0.0, 32.0, 1024.0, 1024.0], [512.0, 512.0, 16.0, 0.0, 512.0, 640.0]][:b])
        kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        entries[f"{name}.text_embeds"] = text_embeds
        entries[f"{name}.time_ids"] = time_ids
    with_grad = name == "a"
    if with_grad:
        sample.requires_grad_(True)
        ehs.requires_grad_(True)
        kwargs["added_cond_kwargs"]["text_embeds"].requires_grad_(True)
    out = model(sample, timestep, ehs, **kwargs).sample
    if with_grad:
        grad_out = randn(*out.shape, seed=40 + ci)
        out.backward(grad_out)
        entries[f"{name}.grad_out"] = grad_out
        entries[f"{name}.grad_sample"] = sample.grad
        entries[f"{name}.grad_encoder_hidden_states"] = ehs.grad
        entries[f"{name}.grad_text_embeds"] = kwargs["added_cond_kwargs"]["text_embeds"].grad
        params = dict(model.named_parameters())
        for k in GRAD_PARAMS:
            entries[f"{name}.grad.{k}"] = params[k].grad
    for k, v in model.state_dict().items():
        entries[f"{name}.weights.{k}"] = v
    entries[f"{name}.sample"] = sample
    entries[f"{name}.encoder_hidden_states"] = ehs
    entries[f"{name}.timestep"] = timestep
    entries[f"{name}.out"] = out
    # diffusers' full config (bookkeeping keys dropped: one is an unordered set).
    configs[name] = {k: v for k, v in model.config.items() if not k.startswith("_")}

os.makedirs(FIXTURES, exist_ok=True)
path = os.path.join(FIXTURES, "unet.safetensors")
save_file({k: v.detach().float().contiguous() for k, v in entries.items()}, path,
          metadata={"configs": json.dumps(configs, sort_keys=True)})  # one key: safetensors orders metadata randomly
print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(entries)} tensors)")
