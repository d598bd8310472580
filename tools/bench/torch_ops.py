"""Times tensor-engine benchmark cases in PyTorch on this CPU for `just bench`.

Usage: torch_ops.py NAME... ; prints {name: median seconds} as JSON for the names it
knows. Exits 3 when torch is not installed. Same thread count as KoalaBooth (all cores).
"""
import json
import os
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch is not installed", file=sys.stderr)
    sys.exit(3)

torch.set_num_threads(os.cpu_count())


def timed(fn, min_time=1.0, max_runs=10):
    fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < max_runs and (not samples or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2]


def sgemm(n):
    a, b = torch.full((n, n), 0.5), torch.full((n, n), 0.25)
    return lambda: a @ b


def conv(backward):
    x = torch.randn(1, 320, 128, 128, requires_grad=backward)
    w = torch.randn(320, 320, 3, 3, requires_grad=backward) * 0.02
    w = w.detach().requires_grad_(backward)
    b = torch.zeros(320, requires_grad=backward)
    if not backward:
        def run():
            with torch.no_grad():
                F.conv2d(x, w, b, padding=1)
        return run
    out = F.conv2d(x, w, b, padding=1)
    g = torch.randn_like(out)

    def run():
        torch.autograd.grad(F.conv2d(x, w, b, padding=1), (x, w, b), g)
    return run


def attention(backward):
    q, k, v = (torch.randn(1, 10, 4096, 64, requires_grad=backward) for _ in range(3))
    if not backward:
        def run():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v)
        return run
    g = torch.randn(1, 10, 4096, 64)

    def run():
        torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), g)
    return run


CASES = {
    "sgemm 2048x2048x2048": lambda: sgemm(2048),
    "sgemm 4096x4096x4096": lambda: sgemm(4096),
    "conv2d 3x3 320ch 128x128 forward": lambda: conv(False),
    "conv2d 3x3 320ch 128x128 backward": lambda: conv(True),
    "attention 4096 tok 10x64 forward": lambda: attention(False),
    "attention 4096 tok 10x64 backward": lambda: attention(True),
}

if __name__ == "__main__":
    result = {}
    for name in sys.argv[1:]:
        if name in CASES:
            result[name] = timed(CASES[name]())
    print(json.dumps(result))
