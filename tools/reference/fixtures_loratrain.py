"""LoRA and full fine-tuning gradients of a tiny diffusers U-Net (KOALA-700M layout:
DownBlock2D first, no mid block, text_time addition embedding, linear projections).

For fixed noisy latents, noise, timesteps and conditioning, the loss is
MSE(unet(noisy, t, ...), noise) as the DreamBooth training script computes it. Cases:

- "full": every U-Net parameter trainable; the gradient of each is saved.
- "attn": PEFT LoRA r=4, alpha=8 on to_q/to_k/to_v/to_out.0 (PEFT's default init,
  then lora_B set to seeded random values so the gradients of lora_A are not zero).
- "wide": PEFT LoRA r=2, alpha=3 on attention, feed-forward and resnet conv1/conv2
  (the convolutional LoRA path), lora_B random as above.

Each LoRA case saves its lora weights, loss and the gradient of every lora weight, and
(metadata "export") what diffusers writes for that adapter: the keys and shapes of
`save_lora_weights(unet_lora_layers=get_peft_model_state_dict(unet), ...)` with its
`lora_adapter_metadata`, and the keys and shapes `convert_state_dict_to_kohya` gives.
"""
import json
import os
import tempfile
import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file
from common import FIXTURES, ROOT, gen, randn

CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=[4, 8], norm_num_groups=2,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    mid_block_type=None, layers_per_block=1, transformer_layers_per_block=[1, 1], attention_head_dim=[1, 2],
    cross_attention_dim=6, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=2, projection_class_embeddings_input_dim=6 + 6 * 2,
)
LORA = {
    "attn": dict(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
    "wide": dict(r=2, lora_alpha=3, target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2",
                                                    "conv1", "conv2"]),
}


def base_model():
    torch.manual_seed(0)
    model = UNet2DConditionModel(**CONFIG)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("bias") or "norm" in k:
                p.add_(torch.randn(p.shape, generator=gen(p.numel() + len(k))) * 0.1)
    return model.train()


b = 2
latents = randn(b, 4, 8, 8, seed=1)
noise = randn(b, 4, 8, 8, seed=2)
timesteps = torch.tensor([999, 17])
# DDPM forward noising with SDXL's scaled-linear betas.
betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
abar = torch.cumprod(1 - betas, 0)
sa, sb = abar[timesteps].sqrt().view(b, 1, 1, 1), (1 - abar[timesteps]).sqrt().view(b, 1, 1, 1)
noisy = sa * latents + sb * noise
ehs = randn(b, 5, 6, seed=3)
text_embeds = randn(b, 6, seed=4)
time_ids = torch.tensor([[1024.0, 768.0, 0.0, 32.0, 1024.0, 1024.0], [512.0, 512.0, 16.0, 0.0, 512.0, 640.0]])


def loss_of(model):
    pred = model(noisy, timesteps.float(), ehs, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
    return torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="mean")


def main():
    entries = {"latents": latents, "noise": noise, "noisy": noisy, "timesteps": timesteps.float(),
               "encoder_hidden_states": ehs, "text_embeds": text_embeds, "time_ids": time_ids}

    # Full fine-tuning.
    model = base_model()
    for k, v in model.state_dict().items():
        entries[f"weights.{k}"] = v
    loss = loss_of(model)
    loss.backward()
    entries["full.loss"] = loss.detach().reshape(1)
    for k, p in model.named_parameters():
        entries[f"full.grad.{k}"] = p.grad

    export = {}
    for ci, (name, lcfg) in enumerate(LORA.items()):
        model = base_model()
        model.requires_grad_(False)
        model.add_adapter(LoraConfig(init_lora_weights=True, **lcfg))
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k:
                    p.copy_(torch.randn(p.shape, generator=gen(1000 * ci + p.numel() + len(k))) * 0.3)
        loss = loss_of(model)
        loss.backward()
        entries[f"{name}.loss"] = loss.detach().reshape(1)
        for k, p in model.named_parameters():
            if "lora_" in k:
                key = k.replace(".default", "")
                entries[f"{name}.lora.{key}"] = p.detach()
                entries[f"{name}.grad.{key}"] = p.grad
            else:
                assert p.grad is None, k
        peft_sd = get_peft_model_state_dict(model)
        with tempfile.TemporaryDirectory() as d:
            StableDiffusionXLPipeline.save_lora_weights(d, unet_lora_layers=peft_sd,
                                                        unet_lora_adapter_metadata=model.peft_config["default"].to_dict())
            with safe_open(os.path.join(d, "pytorch_lora_weights.safetensors"), "pt") as f:
                diffusers_keys = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
                meta = f.metadata()
        kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in peft_sd.items()})
        export[name] = {
            "diffusers": diffusers_keys,
            "metadata_format": meta["format"],
            "lora_adapter_metadata": json.loads(meta["lora_adapter_metadata"]),
            "kohya": {k: list(v.shape) for k, v in kohya.items()},
        }

    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, "loratrain.safetensors")
    config = {k: v for k, v in base_model().config.items() if not k.startswith("_")}
    save_file({k: v.detach().float().contiguous() for k, v in entries.items()}, path,
              metadata={"fixture": json.dumps({"config": config, "lora": LORA, "export": export}, sort_keys=True, default=list)})
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(entries)} tensors)")


if __name__ == "__main__":
    main()
