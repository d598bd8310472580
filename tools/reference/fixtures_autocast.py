"""The bf16 precision mode's reference: torch.autocast("cpu", dtype=torch.bfloat16)
(torch 2.15, diffusers 0.42.1, peft; pinned in requirements.txt) on the tiny models of
two float32 fixtures, whose weights and inputs it reads back so both modes see the same
numbers:

- "unet": case "a" of unet.safetensors (KOALA-700M's structure), forward only;
- "lora": case "wide" of loratrain.safetensors (PEFT LoRA on attention, feed-forward and
  resnet convolutions), one training step: loss MSE(unet(noisy, t), noise) and the
  gradient of every adapter weight (adapters and gradients float32, as in training).

Requires unet.safetensors and loratrain.safetensors (make_fixtures runs this script
after them: alphabetical order puts "autocast" first, so it runs them itself when missing).
"""
import json
import os
import runpy
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from safetensors import safe_open
from common import FIXTURES, ROOT, save

here = os.path.dirname(os.path.abspath(__file__))


def fixture(name):
    path = os.path.join(FIXTURES, f"{name}.safetensors")
    if not os.path.exists(path):
        runpy.run_path(os.path.join(here, f"fixtures_{name}.py"), run_name="__main__")
    return safe_open(path, "pt")


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


entries = {}

# U-Net forward, case "a".
with fixture("unet") as f:
    cfg = json.loads(f.metadata()["configs"])["a"]
    model = UNet2DConditionModel.from_config(cfg).eval()
    prefix = "a.weights."
    model.load_state_dict({k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}, strict=True)
    t = {k: f.get_tensor(f"a.{k}") for k in ["sample", "encoder_hidden_states", "timestep", "text_embeds", "time_ids"]}
with torch.no_grad(), autocast():
    out = model(t["sample"], t["timestep"], t["encoder_hidden_states"],
                added_cond_kwargs={"text_embeds": t["text_embeds"], "time_ids": t["time_ids"]}).sample
entries["unet.out"] = out.float()

# One LoRA step, case "wide".
with fixture("loratrain") as f:
    meta = json.loads(f.metadata()["fixture"])
    model = UNet2DConditionModel.from_config(meta["config"]).train()
    model.load_state_dict({k[len("weights."):]: f.get_tensor(k) for k in f.keys() if k.startswith("weights.")}, strict=True)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(init_lora_weights=True, **meta["lora"]["wide"]))
    lora = {k[len("wide.lora."):]: f.get_tensor(k) for k in f.keys() if k.startswith("wide.lora.")}
    t = {k: f.get_tensor(k) for k in ["noisy", "noise", "timesteps", "encoder_hidden_states", "text_embeds", "time_ids"]}
params = {k.replace(".default", ""): p for k, p in model.named_parameters() if "lora_" in k}
assert set(params) == set(lora), "adapter names differ from loratrain.safetensors"
with torch.no_grad():
    for k, p in params.items():
        p.copy_(lora[k])
with autocast():
    pred = model(t["noisy"], t["timesteps"], t["encoder_hidden_states"],
                 added_cond_kwargs={"text_embeds": t["text_embeds"], "time_ids": t["time_ids"]}).sample
    # As the DreamBooth script: the loss in float32 (mse_loss is on autocast's fp32 list too).
    loss = torch.nn.functional.mse_loss(pred.float(), t["noise"].float(), reduction="mean")
loss.backward()
entries["lora.loss"] = loss.detach().reshape(1)
for k, p in params.items():
    assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
    entries[f"lora.grad.{k}"] = p.grad

save("autocast", entries)
print(f"   (torch {torch.__version__}; unet.out dtype under autocast: {out.dtype})")
