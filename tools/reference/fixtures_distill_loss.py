"""KOALA's distillation loss (issue 19), one step: L_task + L_outKD + L_featKD with
weights, the teacher without gradients, features taken by forward hooks on diffusers'
UNet2DConditionModel modules.

A tiny teacher with SDXL's structure (2 resnets per down block, stacks [1, 2, 4], mid
block) and two students with KOALA-700M's structure (1 resnet, [1, 1, 2], no mid block)
and KOALA-1B's ([1, 2, 3], mid block). The teacher's 4-deep stacks under the students'
2 and 3 make the three mappings pick different teacher blocks.

The pairs are found by walking the modules (KoalaBooth builds them from the same
structure, independently):
- `self-attention` (KOALA): every student transformer block's `attn1` output against
  the teacher's `attn1` in the same stage; down block attention j <- teacher j, up block
  attentions: the first k-1 <- the teacher's first k-1, the last <- the teacher's last;
  mid block attention <- the teacher's; inside a stack of depth s under the teacher's t,
  block l <- sa-bottom l, sa-interleave floor(l*t/s), sa-up t-s+l. Stages without
  transformer blocks (DW-1, UP-3): the stage's output.
- `last-feature` (BK-SDM): every stage's output (down blocks after the downsampler:
  output[0] of the hooked block; the mid block where the student has one; up blocks).

Writes Tests/Fixtures/distill_loss.safetensors: `teacher`, `koala-700m`, `koala-1b` (each
model's parameters flattened and concatenated in named_parameters() order),
the inputs (`sample`, `timestep`, `encoder_hidden_states`, `text_embeds`, `time_ids`,
`target`) and per case `<student>/<mode>/<mapping>.{task,output,feature,total}` and
`….grads` (the student's gradients of total, flattened and concatenated in
named_parameters() order); metadata "reference": JSON with "configs", "weights"
and "pairs" (each case's pairs).
"""
import json
import os
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from common import FIXTURES, ROOT, gen, randn
from fixtures_distill import unet_configs

CONFIGS = unet_configs(teacher=[1, 2, 4], koala_700m=[1, 1, 2], koala_1b=[1, 2, 3])
WEIGHTS = {"task": 1.0, "output": 0.7, "feature": 1.3}
CASES = [("self-attention", "sa-bottom"), ("self-attention", "sa-interleave"), ("self-attention", "sa-up"),
         ("last-feature", "sa-bottom")]


def teacher_block(mapping, l, s, t):
    return {"sa-bottom": l, "sa-interleave": l * t // s, "sa-up": t - s + l}[mapping]


def pairs(student, teacher, mode, mapping):
    out = []

    def attentions(prefix, s_attn, t_attn, up):
        for j, a in enumerate(s_attn):
            tj = len(t_attn) - 1 if up and j == len(s_attn) - 1 else j
            sd, td = len(a.transformer_blocks), len(t_attn[tj].transformer_blocks)
            for l in range(sd):
                tl = teacher_block(mapping, l, sd, td)
                out.append((f"{prefix}.attentions.{j}.transformer_blocks.{l}.attn1",
                            f"{prefix}.attentions.{tj}.transformer_blocks.{tl}.attn1"))

    for kind, s_blocks, t_blocks in (("down_blocks", student.down_blocks, teacher.down_blocks),
                                     ("mid_block", [student.mid_block], [teacher.mid_block]),
                                     ("up_blocks", student.up_blocks, teacher.up_blocks)):
        for i, (s, t) in enumerate(zip(s_blocks, t_blocks)):
            if s is None:
                continue
            prefix = kind if kind == "mid_block" else f"{kind}.{i}"
            if mode == "self-attention" and hasattr(s, "attentions") and s.attentions is not None:
                attentions(prefix, s.attentions, t.attentions, kind == "up_blocks")
            else:
                out.append((prefix, prefix))
    return out


def hook(model, names):
    """Forward hooks keeping the outputs of the named modules."""
    store, modules = {}, dict(model.named_modules())
    handles = []
    for name in names:
        def keep(_m, _i, output, name=name):
            store[name] = output[0] if isinstance(output, tuple) else output  # down blocks: (h, skips)
        handles.append(modules[name].register_forward_hook(keep))
    return store, handles


def flat(model):
    # One tensor per model, parameters flattened in named_parameters() order (KoalaBooth's
    # namedParameters() order, split again by its own shapes): a few thousand small
    # entries would make the header a third of the file.
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def perturb(model, seed):
    # Biases and norm weights off their defaults, so a parameter or a feature taken from
    # the wrong place shows.
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith("bias") or "norm" in k:
                p.add_(torch.randn(p.shape, generator=gen(seed + p.numel() + len(k))) * 0.1)


if __name__ == "__main__":
    torch.manual_seed(0)
    teacher = UNet2DConditionModel(**CONFIGS["teacher"]).eval()
    perturb(teacher, 0)
    for p in teacher.parameters():
        p.requires_grad_(False)
    entries = {"teacher": flat(teacher)}
    configs = {"teacher": {k: v for k, v in teacher.config.items() if not k.startswith("_")}}

    b = 2
    inputs = dict(sample=randn(b, 4, 8, 8, seed=1), timestep=torch.tensor([17.0, 803.0]),
                  encoder_hidden_states=randn(b, 3, 6, seed=2), text_embeds=randn(b, 6, seed=3),
                  time_ids=torch.tensor([[8.0, 8.0, 0.0, 0.0, 8.0, 8.0], [16.0, 12.0, 2.0, 1.0, 8.0, 8.0]]),
                  target=randn(b, 4, 8, 8, seed=4))
    entries.update(inputs)
    cond = dict(encoder_hidden_states=inputs["encoder_hidden_states"],
                added_cond_kwargs={"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]})
    all_pairs = {}
    for n, name in enumerate(("koala-700m", "koala-1b")):
        torch.manual_seed(10 + n)
        student = UNet2DConditionModel(**CONFIGS[name]).eval()
        perturb(student, 100 * (n + 1))
        entries[name] = flat(student)
        configs[name] = {k: v for k, v in student.config.items() if not k.startswith("_")}
        for mode, mapping in CASES:
            case = f"{name}/{mode}/{mapping}"
            ps = pairs(student, teacher, mode, mapping)
            all_pairs[case] = ps
            t_store, t_handles = hook(teacher, {t for _, t in ps})
            with torch.no_grad():
                t_out = teacher(inputs["sample"], inputs["timestep"], **cond).sample
            s_store, s_handles = hook(student, {s for s, _ in ps})
            student.zero_grad(set_to_none=True)
            s_out = student(inputs["sample"], inputs["timestep"], **cond).sample
            for h in t_handles + s_handles:
                h.remove()
            task = F.mse_loss(s_out, inputs["target"])
            output = F.mse_loss(s_out, t_out)
            feature = sum(F.mse_loss(s_store[s], t_store[t]) for s, t in ps)
            total = WEIGHTS["task"] * task + WEIGHTS["output"] * output + WEIGHTS["feature"] * feature
            total.backward()
            for term, v in (("task", task), ("output", output), ("feature", feature), ("total", total)):
                entries[f"{case}.{term}"] = v.detach().reshape([])
            entries[f"{case}.grads"] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                                  for p in student.parameters()])

    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, "distill_loss.safetensors")
    save_file({k: v.detach().float().contiguous() for k, v in entries.items()}, path,
              # One metadata entry: safetensors writes several in a random order, so the
              # file would not be byte-identical from one run to the next.
              metadata={"reference": json.dumps({"configs": configs, "weights": WEIGHTS, "pairs": all_pairs},
                                                sort_keys=True)})
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(entries)} tensors)")
