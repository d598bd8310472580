"""safetensors files written by torch in F32/F16/BF16, with torch's own conversions
back to float32 (rounding reference)."""
import torch
from common import randn, save
from safetensors.torch import save_file
from common import FIXTURES
import os

x = randn(3, 5, seed=11) * 100
x[0, 0] = 1.00390625  # halfway between two bf16 values: tests round-to-nearest-even
x[0, 1] = 1.01171875
path = os.path.join(FIXTURES, "safetensors_dtypes.safetensors")
save_file({
    "f32": x,
    "f16": x.to(torch.float16),
    "f16_as_f32": x.to(torch.float16).to(torch.float32),
    "bf16": x.to(torch.bfloat16),
    "bf16_as_f32": x.to(torch.bfloat16).to(torch.float32),
}, path)
print("wrote", path)
