"""The KOALA student initialisation (issue 19): a tiny teacher with SDXL's U-Net
structure and two tiny students with KOALA-700M's and KOALA-1B's, built with diffusers'
UNet2DConditionModel, and each student initialised from the teacher "at the same block
location" (KOALA paper Sec. 4.2; BK-SDM Sec. 3.1).

The reference walks the modules, not the state-dict keys (KoalaBooth maps keys), so the
two are written independently:
- down block i: resnet j and attention j from the teacher's resnet j / attention j
  (the first ones: BK-SDM keeps the first R-A pair of each down stage);
- up block i: the student's first k-1 resnet/attention pairs from the teacher's first
  k-1, its last from the teacher's last (BK-SDM keeps the first and the third pair of
  each up stage; the last pair is also the only one whose resnet takes the skip from
  the stage's input, so only it has the student's last resnet's shape);
- transformer blocks l < the student's depth from the teacher's block l ("SA-bottom");
- the mid block (KOALA-1B) from the teacher's mid block, same rule for its stack;
- everything else (conv_in, time/add embeddings, down/upsamplers, conv_norm_out,
  conv_out) as it is.

Channels differ per level ([2, 4, 6]) so that a resnet taken from the wrong position
has the wrong shape, and every bias and norm weight is perturbed so that one taken
from the wrong position has the wrong values.

Writes Tests/Fixtures/distill.safetensors: `teacher.<key>`, `koala-700m.<key>`,
`koala-1b.<key>` (the expected student weights) and, in the metadata entry
"configs", the three diffusers configs.
"""
import json
import os
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from common import FIXTURES, ROOT, gen

SHARED = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=[2, 4, 6], norm_num_groups=2,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    attention_head_dim=[1, 2, 2], cross_attention_dim=6, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=2, projection_class_embeddings_input_dim=6 + 6 * 2,
)


def unet_configs(teacher, koala_700m, koala_1b):
    """The three structures, given each one's transformer_layers_per_block: the teacher
    SDXL's (2 resnets per down block, 3 per up block, a mid block), KOALA-700M's (1 resnet
    per down block, no mid block) and KOALA-1B's (1 resnet per down block, a mid block)."""
    return {
        "teacher": dict(SHARED, layers_per_block=2, transformer_layers_per_block=teacher,
                        mid_block_type="UNetMidBlock2DCrossAttn"),
        "koala-700m": dict(SHARED, layers_per_block=1, transformer_layers_per_block=koala_700m, mid_block_type=None),
        "koala-1b": dict(SHARED, layers_per_block=1, transformer_layers_per_block=koala_1b,
                         mid_block_type="UNetMidBlock2DCrossAttn"),
    }


# Stacks: SDXL [1, 2, 10] -> [1, 2, 3], KOALA-700M [1, 2, 5] -> [1, 1, 2], KOALA-1B
# [1, 2, 6] -> [1, 2, 2] (its mid block: depth 2 of the teacher's 3).
CONFIGS = unet_configs(teacher=[1, 2, 3], koala_700m=[1, 1, 2], koala_1b=[1, 2, 2])


def copy(student_module, teacher_module):
    # strict: the same parameter names and shapes, or an error.
    student_module.load_state_dict(teacher_module.state_dict(), strict=True)


def copy_transformer(s, t):
    """A Transformer2DModel: its norm and projections, and its first blocks (SA-bottom)."""
    assert len(s.transformer_blocks) <= len(t.transformer_blocks)
    for name in ("norm", "proj_in", "proj_out"):
        copy(getattr(s, name), getattr(t, name))
    for l in range(len(s.transformer_blocks)):
        copy(s.transformer_blocks[l], t.transformer_blocks[l])


def initialize(student, teacher):
    with torch.no_grad():
        for p in student.parameters():
            p.fill_(float("nan"))  # so a parameter nothing copies into is caught below
        for name in ("conv_in", "time_embedding", "add_embedding", "conv_norm_out", "conv_out"):
            copy(getattr(student, name), getattr(teacher, name))
        for s, t in zip(student.down_blocks, teacher.down_blocks):
            for j in range(len(s.resnets)):
                copy(s.resnets[j], t.resnets[j])
                if hasattr(s, "attentions"):
                    copy_transformer(s.attentions[j], t.attentions[j])
            if s.downsamplers is not None:
                copy(s.downsamplers, t.downsamplers)
        if student.mid_block is not None:
            for j in range(len(student.mid_block.resnets)):
                copy(student.mid_block.resnets[j], teacher.mid_block.resnets[j])
            copy_transformer(student.mid_block.attentions[0], teacher.mid_block.attentions[0])
        for s, t in zip(student.up_blocks, teacher.up_blocks):
            k, m = len(s.resnets), len(t.resnets)
            picks = list(range(k - 1)) + [m - 1]
            for j, tj in enumerate(picks):
                copy(s.resnets[j], t.resnets[tj])
                if hasattr(s, "attentions"):
                    copy_transformer(s.attentions[j], t.attentions[tj])
            if s.upsamplers is not None:
                copy(s.upsamplers, t.upsamplers)
        for k, p in student.named_parameters():
            assert not torch.isnan(p).any(), f"{k} was not initialised"


if __name__ == "__main__":
    torch.manual_seed(0)
    teacher = UNet2DConditionModel(**CONFIGS["teacher"]).eval()
    with torch.no_grad():
        for k, p in teacher.named_parameters():
            if k.endswith("bias") or "norm" in k:
                p.add_(torch.randn(p.shape, generator=gen(p.numel() + len(k))) * 0.1)
    entries = {f"teacher.{k}": v for k, v in teacher.state_dict().items()}
    configs = {"teacher": {k: v for k, v in teacher.config.items() if not k.startswith("_")}}
    for name in ("koala-700m", "koala-1b"):
        torch.manual_seed(1)
        student = UNet2DConditionModel(**CONFIGS[name]).eval()
        initialize(student, teacher)
        entries.update({f"{name}.{k}": v for k, v in student.state_dict().items()})
        configs[name] = {k: v for k, v in student.config.items() if not k.startswith("_")}

    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, "distill.safetensors")
    save_file({k: v.detach().float().contiguous() for k, v in entries.items()}, path,
              metadata={"configs": json.dumps(configs, sort_keys=True)})
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(entries)} tensors)")
