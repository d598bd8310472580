"""Optimizers: bitsandbytes Adam8bit / AdamW8bit on CPU, torch Adam / AdamW,
clip_grad_norm_, diffusers get_scheduler learning rates, and bitsandbytes'
dynamic maps and blockwise quantization.

bitsandbytes 0.50.2 runs here on its CPU backend (libbitsandbytes_cpu.so): the
quantized states, absmax and parameters below are what it produces. Quantized
codes are stored as F16 (integers 0...255 are exact) to keep the file small.

Gradients for step t (1-based) are a fixed vector rolled and scaled:
    g_t[i] = G[(i + 97 t) mod n] * scale[t-1]   (float32 product)
so the Swift test rebuilds the same inputs from `G` and `scale`.
"""
import math
import os

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as BF
from diffusers.optimization import get_scheduler
from safetensors.torch import save_file

from common import FIXTURES, randn, gen

STEPS = 20
out = {}


def put(name, t, dtype=torch.float32):
    out[name] = t.detach().to(dtype).contiguous().clone()


def grad_at(G, scale, t):
    n = G.numel()
    idx = (torch.arange(n) + 97 * t) % n
    return G[idx] * scale[t - 1]


# Gradients: mixed magnitudes (so blocks have very different absmax), a run of
# zeros (zero values and, at some shifts, whole zero blocks), and a tail block.
N8, N32 = 5000, 300
G8 = randn(N8, seed=1) * torch.exp(randn(N8, seed=2) * 1.5)
G8[1000:1400] = 0
G32 = randn(N32, seed=3) * torch.exp(randn(N32, seed=4))
scale = torch.exp(torch.rand(STEPS, generator=gen(5)) * 3 - 2)
P8 = randn(N8, seed=6)
P32 = randn(N32, seed=7)
put("grad8", G8); put("grad32", G32); put("scale", scale)
put("init8", P8); put("init32", P32)

# --- bitsandbytes 8-bit Adam ------------------------------------------------
configs = {
    "adam8bit": (bnb.optim.Adam8bit, dict(lr=1e-3, weight_decay=0.0), (1, 20)),
    "adamw8bit": (bnb.optim.AdamW8bit, dict(lr=2e-3, weight_decay=0.01), (20,)),
}
for name, (cls, kw, checkpoints) in configs.items():
    p8 = torch.nn.Parameter(P8.clone())
    p32 = torch.nn.Parameter(P32.clone())
    opt = cls([p8, p32], betas=(0.9, 0.999), eps=1e-8, **kw)
    for t in range(1, STEPS + 1):
        p8.grad = grad_at(G8, scale, t)
        p32.grad = grad_at(G32, scale, t)
        opt.step()
        if t in checkpoints:
            s8, s32 = opt.state[p8], opt.state[p32]
            assert s8["state1"].dtype == torch.uint8 and s32["state1"].dtype == torch.float32
            k = f"{name}.step{t}"
            put(f"{k}.param8", p8); put(f"{k}.param32", p32)
            put(f"{k}.state1", s8["state1"], torch.float16); put(f"{k}.state2", s8["state2"], torch.float16)
            put(f"{k}.absmax1", s8["absmax1"]); put(f"{k}.absmax2", s8["absmax2"])
            put(f"{k}.exp_avg32", s32["state1"]); put(f"{k}.exp_avg_sq32", s32["state2"])

# --- torch Adam / AdamW (float32) --------------------------------------------
for name, cls, kw in [("adamw", torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01)),
                      ("adam", torch.optim.Adam, dict(lr=1e-3, weight_decay=0.01))]:
    p = torch.nn.Parameter(P32.clone())
    opt = cls([p], betas=(0.9, 0.999), eps=1e-8, **kw)
    for t in range(1, STEPS + 1):
        p.grad = grad_at(G32, scale, t)
        opt.step()
        if t in (1, 20):
            put(f"{name}.step{t}.param", p)
            put(f"{name}.step{t}.exp_avg", opt.state[p]["exp_avg"])
            put(f"{name}.step{t}.exp_avg_sq", opt.state[p]["exp_avg_sq"])

# --- dynamic maps and blockwise quantization -----------------------------------
put("map.signed", BF.create_dynamic_map(signed=True))
put("map.unsigned", BF.create_dynamic_map(signed=False))
x = randn(1003, seed=8) * torch.exp(randn(1003, seed=9) * 2)
x[512:768] = 0          # one all-zero block (absmax 0)
x[100:110] = 0          # zeros inside a block
x[300] = -x[256:512].abs().max() * 2   # the block's extreme is negative
put("quant.x", x)
for signed in (True, False):
    tag = "signed" if signed else "unsigned"
    code = BF.create_dynamic_map(signed=signed)
    a = x if signed else x.abs()
    q, absmax = torch.ops.bitsandbytes.quantize_blockwise(a.clone(), code.clone(), 256)
    deq = torch.ops.bitsandbytes.dequantize_blockwise(q, absmax, code.clone(), 256, torch.float32)
    put(f"quant.{tag}.codes", q, torch.float16); put(f"quant.{tag}.absmax", absmax); put(f"quant.{tag}.dequant", deq)

# --- clip_grad_norm_ ------------------------------------------------------------
for tag, max_norm, sc in [("clip", 1.0, 1.0), ("noclip", 100.0, 1.0), ("clip_small", 0.01, 1e-3)]:
    ps = [torch.nn.Parameter(torch.zeros(s)) for s in ((5, 10), (30,), (7,))]
    for i, p in enumerate(ps):
        p.grad = randn(*p.shape, seed=20 + i) * sc
        put(f"{tag}.grad{i}", p.grad)
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
    put(f"{tag}.max_norm", torch.tensor([max_norm]))
    put(f"{tag}.total_norm", total.reshape(1))
    for i, p in enumerate(ps):
        put(f"{tag}.clipped{i}", p.grad)

# --- diffusers learning-rate schedules -------------------------------------------
BASE_LR, WARMUP, TOTAL, SHOWN = 1e-4, 5, 20, 25
for sched in ("constant", "constant_with_warmup", "linear", "cosine"):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=BASE_LR)
    s = get_scheduler(sched, opt, num_warmup_steps=WARMUP, num_training_steps=TOTAL)
    lrs = []
    for _ in range(SHOWN):
        lrs.append(opt.param_groups[0]["lr"])  # the rate the optimizer step uses
        opt.step(); s.step()
    # Stored relative to the base rate, in float64 precision kept by float32 of the ratio.
    put(f"lr.{sched}", torch.tensor(lrs, dtype=torch.float64) / BASE_LR)

path = os.path.join(FIXTURES, "optim.safetensors")
save_file(out, path, metadata={"bitsandbytes": bnb.__version__, "torch": torch.__version__,
                               "lr_base": str(BASE_LR), "lr_warmup": str(WARMUP), "lr_total": str(TOTAL)})
print(f"wrote {path} ({os.path.getsize(path) / 1024:.1f} KiB, {len(out)} tensors)")
