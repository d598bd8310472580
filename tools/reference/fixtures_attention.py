"""softmax and scaled_dot_product_attention: forward and gradients (torch).

Attention cases cover self- and cross-attention (S != L, Dv != D), a custom scale,
causal masks with L == S, L < S and L > S (torch's top-left aligned is_causal), and
shapes (B=1, H=2 to keep the file small) the Swift tests run with a small query block so several tiles and a ragged
last tile are exercised.
"""
import torch
import torch.nn.functional as F
from common import randn, save, forward_backward

entries = {}
entries |= forward_backward("softmax_last", lambda x: torch.softmax(x, dim=-1),
                            {"x": randn(4, 7, 37, seed=1, scale=3.0)}, seed=2)
entries |= forward_backward("softmax_mid", lambda x: torch.softmax(x, dim=1),
                            {"x": randn(3, 5, 6, seed=3, scale=3.0)}, seed=4)
# Large logits: only a max-shifted softmax stays finite.
entries |= forward_backward("softmax_large", lambda x: torch.softmax(x, dim=-1),
                            {"x": randn(6, 19, seed=5, scale=200.0)}, seed=6)


def attention(name, b, h, l, s, d, dv, seed, causal=False, scale=None):
    global entries
    inputs = {"q": randn(b, h, l, d, seed=seed), "k": randn(b, h, s, d, seed=seed + 1),
              "v": randn(b, h, s, dv, seed=seed + 2)}
    entries |= forward_backward(
        name, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale),
        inputs, seed=seed + 3)


attention("self", 2, 3, 20, 20, 8, 8, seed=10)
attention("cross_scale", 2, 3, 13, 7, 16, 8, seed=20, scale=0.3)
attention("causal", 2, 3, 17, 17, 8, 8, seed=30, causal=True)
attention("causal_short", 2, 3, 9, 14, 8, 8, seed=40, causal=True)
attention("causal_long", 2, 3, 15, 6, 8, 8, seed=50, causal=True)
attention("tiled", 1, 2, 40, 27, 16, 16, seed=60)
attention("tiled_causal", 1, 2, 40, 40, 8, 8, seed=70, causal=True)
save("attention", entries)
