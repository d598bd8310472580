"""matmul, batched matmul and linear: forward and gradients (torch)."""
import torch
import torch.nn.functional as F
from common import randn, save, forward_backward

entries = {}
entries |= forward_backward("matmul", lambda a, b: a @ b,
                            {"a": randn(5, 7, seed=1), "b": randn(7, 3, seed=2)}, seed=3)
# b is stored [B, N, K] and used transposed, the way attention uses keys.
entries |= forward_backward("bmm", lambda a, b: a @ b.transpose(-1, -2),
                            {"a": randn(2, 3, 4, 6, seed=4), "b": randn(2, 3, 5, 6, seed=5)}, seed=6)
entries |= forward_backward("linear", F.linear,
                            {"x": randn(2, 4, 8, seed=7), "weight": randn(6, 8, seed=8), "bias": randn(6, seed=9)},
                            seed=10)
save("linear", entries)
