"""conv2d, group norm (plain and fused with SiLU), layer norm and nearest 2x upsampling:
forward and gradients (torch)."""
import torch.nn.functional as F
from common import randn, save, forward_backward

entries = {}

# conv2d: name -> (input shape, weight shape, stride, padding, bias)
CONVS = {
    "k3s1p1": ((2, 4, 6, 7), (5, 4, 3, 3), 1, 1, True),
    "k3s1p0": ((2, 4, 6, 7), (5, 4, 3, 3), 1, 0, False),
    "k3s2p1": ((2, 4, 7, 6), (5, 4, 3, 3), 2, 1, True),
    "k3s2p0": ((2, 4, 8, 7), (3, 4, 3, 3), 2, 0, False),
    "k1s1p0": ((2, 6, 5, 4), (3, 6, 1, 1), 1, 0, True),
    "k1s2p0": ((2, 4, 6, 7), (3, 4, 1, 1), 2, 0, False),
    "k1s1p1": ((2, 4, 5, 4), (3, 4, 1, 1), 1, 1, True),
    "k3x1s1p1": ((2, 4, 6, 5), (3, 4, 3, 1), 1, 1, True),
}
seed = 100
for name, (xs, ws, stride, padding, with_bias) in CONVS.items():
    inputs = {"x": randn(*xs, seed=seed), "weight": randn(*ws, seed=seed + 1, scale=0.3)}
    if with_bias:
        inputs["bias"] = randn(ws[0], seed=seed + 2)
    entries |= forward_backward(f"conv.{name}", lambda x, weight, bias=None, s=stride, p=padding:
                                F.conv2d(x, weight, bias, stride=s, padding=p), inputs, seed=seed + 3)
    seed += 10

# group norm: name -> (input shape, groups, eps, affine, offset added to the input)
NORMS = {
    "g4": ((2, 8, 6, 7), 4, 1e-5, True, 0.0),
    "g2_3d": ((2, 8, 10), 2, 1e-6, True, 0.0),
    "g8_plain": ((2, 8, 4, 4), 8, 1e-5, False, 0.0),
    "g4_offset": ((2, 8, 5, 5), 4, 1e-6, True, 20.0),
}
for fused in (False, True):
    for name, (xs, groups, eps, affine, offset) in NORMS.items():
        inputs = {"x": randn(*xs, seed=seed) + offset}
        if affine:
            inputs["weight"] = 1 + randn(xs[1], seed=seed + 1, scale=0.3)
            inputs["bias"] = randn(xs[1], seed=seed + 2, scale=0.3)

        def fn(x, weight=None, bias=None, g=groups, e=eps, fused=fused):
            y = F.group_norm(x, g, weight, bias, e)
            return F.silu(y) if fused else y
        entries |= forward_backward(f"{'gnsilu' if fused else 'gn'}.{name}", fn, inputs, seed=seed + 3)
        seed += 10

# layer norm over the last dim
entries |= forward_backward("ln.affine", lambda x, weight, bias: F.layer_norm(x, (16,), weight, bias, 1e-5),
                            {"x": randn(2, 5, 16, seed=seed), "weight": 1 + randn(16, seed=seed + 1, scale=0.3),
                             "bias": randn(16, seed=seed + 2, scale=0.3)}, seed=seed + 3)
entries |= forward_backward("ln.plain", lambda x: F.layer_norm(x, (8,), None, None, 1e-6),
                            {"x": randn(3, 8, seed=seed + 4) * 3 + 5}, seed=seed + 5)

entries |= forward_backward("upsample", lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
                            {"x": randn(2, 3, 4, 5, seed=seed + 6)}, seed=seed + 7)
save("convnorm", entries)
