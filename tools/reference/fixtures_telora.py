"""Text-encoder LoRA gradients (diffusers' `train_dreambooth_lora_sdxl.py
--train_text_encoder`): PEFT LoRA r=2, alpha=3 on q_proj/k_proj/v_proj/out_proj of a
tiny CLIPTextModel (`text_encoder`) and CLIPTextModelWithProjection (`text_encoder_2`).

The prompt embedding is SDXL's: both encoders' penultimate hidden states concatenated
on the feature axis, and text_encoder_2's projected pooled output. The loss is
sum(hidden * R1) + sum(pooled * R2) for fixed random R1, R2, so every output value
reaches the adapters. lora_B is set to seeded random values (PEFT starts it at zero,
which would leave the gradients of lora_A zero).

Saves the encoders' weights, the token ids, the embeddings, the loss, every lora weight
and its gradient, and (metadata "export") the keys and shapes diffusers'
`StableDiffusionXLPipeline.save_lora_weights(text_encoder_lora_layers=...,
text_encoder_2_lora_layers=...)` writes and `convert_state_dict_to_kohya` gives.
"""
import json
import os
import tempfile
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
from peft import LoraConfig, inject_adapter_in_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from common import FIXTURES, ROOT, gen, randn

LORA = dict(r=2, lora_alpha=3, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
CASES = [
    ("text_encoder", CLIPTextModel, dict(hidden_size=8, intermediate_size=16, hidden_act="quick_gelu", eos_token_id=2)),
    ("text_encoder_2", CLIPTextModelWithProjection,
     dict(hidden_size=12, intermediate_size=24, hidden_act="gelu", eos_token_id=49, projection_dim=6)),
]
IDS = {"text_encoder": [48, 5, 17, 33, 49, 49, 49, 49], "text_encoder_2": [48, 5, 17, 33, 49, 0, 0, 0]}


def main():
    entries, configs, models = {}, {}, {}
    for ci, (name, cls, extra) in enumerate(CASES):
        torch.manual_seed(ci)
        cfg = CLIPTextConfig(vocab_size=50, num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=8,
                             bos_token_id=48, pad_token_id=1, **extra)
        model = cls(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen(p.numel() + ci)) * 0.05)
        for k, v in model.state_dict().items():
            if "position_ids" not in k:
                entries[f"{name}.weights.{k}"] = v
        configs[name] = {k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str))}
        model.requires_grad_(False)
        # What transformers' `add_adapter` does (it insists on a newer PEFT than the
        # reference environment's, so inject the adapters with PEFT directly).
        model = inject_adapter_in_model(LoraConfig(init_lora_weights=True, **LORA), model)
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k:
                    p.copy_(torch.randn(p.shape, generator=gen(100 * ci + p.numel() + len(k))) * 0.3)
        model.train()
        models[name] = model
        entries[f"{name}.ids"] = torch.tensor(IDS[name]).float()

    out1 = models["text_encoder"](torch.tensor([IDS["text_encoder"]]), output_hidden_states=True)
    out2 = models["text_encoder_2"](torch.tensor([IDS["text_encoder_2"]]), output_hidden_states=True)
    hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    pooled = out2.text_embeds
    r1, r2 = randn(*hidden.shape, seed=7), randn(*pooled.shape, seed=8)
    loss = (hidden * r1).sum() + (pooled * r2).sum()
    loss.backward()
    entries.update({"hidden": hidden.detach(), "pooled": pooled.detach(), "r1": r1, "r2": r2, "loss": loss.detach().reshape(1)})

    peft = {}
    for name, model in models.items():
        for k, p in model.named_parameters():
            if "lora_" in k:
                key = k.replace(".default", "")
                entries[f"{name}.lora.{key}"] = p.detach()
                if p.grad is not None:  # text_encoder's last layer feeds nothing SDXL uses: no gradient
                    entries[f"{name}.grad.{key}"] = p.grad
            else:
                assert p.grad is None, k
        # get_peft_model_state_dict's layout: the lora weights without the adapter name.
        peft[name] = {k.replace(".default", ""): p.detach() for k, p in model.named_parameters() if "lora_" in k}
    with tempfile.TemporaryDirectory() as d:
        StableDiffusionXLPipeline.save_lora_weights(
            d, text_encoder_lora_layers=peft["text_encoder"], text_encoder_2_lora_layers=peft["text_encoder_2"],
            text_encoder_lora_adapter_metadata=LoraConfig(init_lora_weights=True, **LORA).to_dict(),
            text_encoder_2_lora_adapter_metadata=LoraConfig(init_lora_weights=True, **LORA).to_dict())
        with safe_open(os.path.join(d, "pytorch_lora_weights.safetensors"), "pt") as f:
            diffusers_keys = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            meta = f.metadata()
    kohya = convert_state_dict_to_kohya({f"{n}.{k}": v for n, sd in peft.items() for k, v in sd.items()})
    export = {"diffusers": diffusers_keys, "lora_adapter_metadata": json.loads(meta["lora_adapter_metadata"]),
              "kohya": {k: list(v.shape) for k, v in kohya.items()}}

    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, "telora.safetensors")
    save_file({k: v.detach().float().contiguous() for k, v in entries.items()}, path,
              metadata={"fixture": json.dumps({"configs": configs, "lora": LORA, "export": export}, sort_keys=True)})
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(entries)} tensors)")


if __name__ == "__main__":
    main()
