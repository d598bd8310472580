"""Draws from torch.Generator().manual_seed(s) (CPU), for TorchGenerator to match bit for bit.

randn takes two code paths in PyTorch's CPU kernel: fewer than 16 elements draw one
double-precision Box–Muller normal at a time (caching the second value on the
generator); 16 or more fill uniforms and transform them in chunks of 16 (on x86 the
AVX2 kernel), recomputing the last 16 when the size is not a multiple of 16. The sizes
below cover both paths and the tail.

Large tensors are stored as their first and last 256 values, the values at 2000 fixed
positions (`positions.<n>`), and two checksums of all float32 bit patterns (exact
integers below 2^24, so they survive the float32 storage) that the test recomputes.
"""
import numpy as np
import torch
from common import save

SEEDS = [0, 42, 1234, 2**32 + 5]
BIG = {"1x4x64x64": [1, 4, 64, 64], "2x4x128x128": [2, 4, 128, 128]}
ODD = [1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 1000, 1001]
RAND = {"1": [1], "5": [5], "16": [16], "17": [17], "3x64": [3, 64]}
PRIME = 16_777_213  # largest prime below 2^24


def gen(seed):
    return torch.Generator().manual_seed(seed)


def checksums(t):
    bits = t.contiguous().view(torch.int32).numpy().astype(np.int64) & 0xFFFFFFFF
    bits %= PRIME
    weights = (np.arange(bits.size, dtype=np.int64) + 1) % PRIME
    plain = int(bits.sum() % PRIME)
    weighted = int(((bits * weights) % PRIME).sum() % PRIME)
    return torch.tensor([plain, weighted], dtype=torch.float32)


def split40(t):
    """int64 values below 2^40 as exact float32 halves: [high 20 bits, low 20 bits]."""
    return torch.stack([t // 2**20, t % 2**20]).to(torch.float32)


entries = {}
for shape in BIG.values():
    n = int(np.prod(shape))
    entries[f"positions.{n}"] = torch.tensor((np.arange(2000) * 7919 + 13) % n, dtype=torch.float32)

for s in SEEDS:
    for name, shape in BIG.items():
        x = torch.randn(shape, generator=gen(s)).flatten()
        n = x.numel()
        idx = torch.tensor((np.arange(2000) * 7919 + 13) % n)
        entries[f"s{s}.randn.{name}.head"] = x[:256]
        entries[f"s{s}.randn.{name}.tail"] = x[-256:]
        entries[f"s{s}.randn.{name}.at"] = x[idx]
        entries[f"s{s}.randn.{name}.checksums"] = checksums(x)
    for n in ODD:
        entries[f"s{s}.randn.{n}"] = torch.randn(n, generator=gen(s))
    for name, shape in RAND.items():
        entries[f"s{s}.rand.{name}"] = torch.rand(shape, generator=gen(s))
    for k in [1, 4, 17]:
        entries[f"s{s}.randint.0_1000.{k}"] = torch.randint(0, 1000, (k,), generator=gen(s))
    entries[f"s{s}.randint.-500_500.6"] = torch.randint(-500, 500, (6,), generator=gen(s))
    entries[f"s{s}.randint.0_2e40.5"] = split40(torch.randint(0, 2**40, (5,), generator=gen(s)))

    # One generator, consecutive calls: the cached second Box–Muller value of the small
    # randn calls survives the vectorised randn(20) and the other draws in between.
    g = gen(s)
    entries[f"s{s}.seq.0.randn3"] = torch.randn(3, generator=g)
    entries[f"s{s}.seq.1.rand5"] = torch.rand(5, generator=g)
    entries[f"s{s}.seq.2.randn20"] = torch.randn(20, generator=g)
    entries[f"s{s}.seq.3.randn2"] = torch.randn(2, generator=g)
    entries[f"s{s}.seq.4.randint4"] = torch.randint(0, 1000, (4,), generator=g)
    entries[f"s{s}.seq.5.randn1"] = torch.randn(1, generator=g)
    entries[f"s{s}.seq.6.randn1"] = torch.randn(1, generator=g)
    # manual_seed on a used generator restarts the stream and drops the cached value.
    g.manual_seed(s)
    entries[f"s{s}.seq.7.reseeded.randn2"] = torch.randn(2, generator=g)

save("torchrng", entries)
