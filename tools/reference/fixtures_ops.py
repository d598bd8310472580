"""Elementwise, activation, reduction, shape, embedding and loss ops: forward
outputs and input gradients (torch), plus diffusers' get_timestep_embedding."""
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from common import randn, save, forward_backward

entries = {}


def scalar_forward_backward(prefix, fn, inputs, seed):
    """forward_backward for ops with a scalar (shape []) output."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out = fn(**leaves)
    grad_out = randn(1, seed=seed).reshape(())
    out.backward(grad_out)
    entries = {f"{prefix}.{k}": v.detach() for k, v in leaves.items()}
    entries |= {f"{prefix}.out": out.detach(), f"{prefix}.grad_out": grad_out}
    return entries | {f"{prefix}.grad_{k}": v.grad for k, v in leaves.items()}


def pos(*shape, seed):
    """Values in [0.5, 2.5): safe for sqrt and as denominators."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


# Broadcasting binary ops, one case per kernel path.
entries |= forward_backward("add_same", lambda a, b: a + b, {"a": randn(3, 4, seed=1), "b": randn(3, 4, seed=2)}, seed=3)
entries |= forward_backward("add_trailing", lambda a, b: a + b, {"a": randn(2, 3, 4, seed=4), "b": randn(4, seed=5)}, seed=6)
entries |= forward_backward("mul_channel", lambda a, b: a * b, {"a": randn(2, 3, 4, 5, seed=7), "b": randn(1, 3, 1, 1, seed=8)}, seed=9)
entries |= forward_backward("mul_channel_batch", lambda a, b: a * b, {"a": randn(2, 3, 4, 5, seed=10), "b": randn(2, 3, 1, 1, seed=11)}, seed=12)
entries |= forward_backward("sub_general", lambda a, b: a - b, {"a": randn(3, 1, 5, seed=13), "b": randn(4, 1, seed=14)}, seed=15)
entries |= forward_backward("div_rows", lambda a, b: a / b, {"a": randn(2, 3, seed=16), "b": pos(3, seed=17)}, seed=18)
entries |= forward_backward("div_general", lambda a, b: a / b, {"a": randn(4, 1, 3, seed=19), "b": pos(2, 1, seed=20)}, seed=21)
# a is used transposed: a strided operand.
entries |= forward_backward("mul_transposed", lambda a, b: a.transpose(0, 1) * b, {"a": randn(5, 4, seed=22), "b": randn(4, 5, seed=23)}, seed=24)
entries |= forward_backward("scalar_ops", lambda x: (x * 2.5 + 1.0) / 4.0 - 0.5, {"x": randn(3, 5, seed=25)}, seed=26)
entries |= forward_backward("rscalar_ops", lambda x: (3.0 - x) + 2.0 / x + 1.5 * x, {"x": pos(3, 5, seed=27)}, seed=28)
entries |= forward_backward("neg", lambda x: -x, {"x": randn(2, 5, seed=29)}, seed=30)
entries |= forward_backward("sqrt", lambda x: torch.sqrt(x), {"x": pos(2, 5, seed=31)}, seed=32)
entries |= forward_backward("square", lambda x: torch.square(x), {"x": randn(2, 5, seed=33)}, seed=34)
entries |= forward_backward("exp", lambda x: torch.exp(x), {"x": randn(2, 5, seed=35, scale=3)}, seed=36)

# Activations, inputs spread over [-9, 9] or so.
act_x = lambda s: randn(4, 37, seed=s, scale=3)
entries |= forward_backward("sigmoid", lambda x: torch.sigmoid(x), {"x": act_x(40)}, seed=41)
entries |= forward_backward("silu", lambda x: F.silu(x), {"x": act_x(42)}, seed=43)
entries |= forward_backward("gelu", lambda x: F.gelu(x), {"x": act_x(44)}, seed=45)
entries |= forward_backward("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), {"x": act_x(46)}, seed=47)
entries |= forward_backward("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x), {"x": act_x(48)}, seed=49)


def geglu(x, approximate="none"):
    hidden, gate = x.chunk(2, dim=-1)  # as diffusers GEGLU.forward after self.proj
    return hidden * F.gelu(gate, approximate=approximate)


entries |= forward_backward("geglu", geglu, {"x": randn(2, 3, 10, seed=50, scale=2)}, seed=51)
entries |= forward_backward("geglu_tanh", lambda x: geglu(x, "tanh"), {"x": randn(2, 3, 10, seed=52, scale=2)}, seed=53)

# Reductions.
red_x = lambda s: randn(2, 3, 4, 5, seed=s)
entries |= scalar_forward_backward("sum_all", lambda x: x.sum(), {"x": red_x(60)}, seed=61)
entries |= scalar_forward_backward("mean_all", lambda x: x.mean(), {"x": red_x(62)}, seed=63)
entries |= forward_backward("sum_dim1", lambda x: x.sum(dim=1), {"x": red_x(64)}, seed=65)
entries |= forward_backward("sum_dim0_keep", lambda x: x.sum(dim=0, keepdim=True), {"x": red_x(66)}, seed=67)
entries |= forward_backward("mean_last_keep", lambda x: x.mean(dim=-1, keepdim=True), {"x": red_x(68)}, seed=69)
entries |= forward_backward("mean_dim2", lambda x: x.mean(dim=2), {"x": red_x(70)}, seed=71)

# Shape ops.
entries |= forward_backward("cat_dim1", lambda a, b, c: torch.cat([a, b, c], dim=1),
                            {"a": randn(2, 1, 4, seed=80), "b": randn(2, 3, 4, seed=81), "c": randn(2, 2, 4, seed=82)}, seed=83)
entries |= forward_backward("cat_dim0", lambda a, b: torch.cat([a, b], dim=0),
                            {"a": randn(2, 3, seed=84), "b": randn(1, 3, seed=85)}, seed=86)
entries |= forward_backward("cat_last", lambda a, b: torch.cat([a, b], dim=-1),
                            {"a": randn(3, 2, seed=87), "b": randn(3, 4, seed=88)}, seed=89)


def pieces_fixture(prefix, x, fn, seed):
    """fn returns several tensors; the loss is Σ_i <piece_i, grad_out_i>."""
    leaf = x.clone().requires_grad_(True)
    pieces = fn(leaf)
    out = {f"{prefix}.x": x}
    loss = 0
    for i, p in enumerate(pieces):
        g = randn(*p.shape, seed=seed + i)
        loss = loss + (p * g).sum()
        out[f"{prefix}.out{i}"] = p.detach()
        out[f"{prefix}.grad_out{i}"] = g
    loss.backward()
    out[f"{prefix}.grad_x"] = leaf.grad
    return out


entries |= pieces_fixture("split", randn(2, 6, 3, seed=90), lambda x: x.split([1, 3, 2], dim=1), seed=91)
entries |= pieces_fixture("chunk", randn(2, 7, 3, seed=95), lambda x: x.chunk(3, dim=1), seed=96)
entries |= pieces_fixture("chunk_last", randn(3, 8, seed=100), lambda x: x.chunk(2, dim=-1), seed=101)

# Embedding: ids [[1, 3, 3], [0, 9, 1]] (repeats accumulate in the weight gradient).
ids = torch.tensor([[1, 3, 3], [0, 9, 1]])
emb = forward_backward("embedding", lambda weight: F.embedding(ids, weight), {"weight": randn(10, 4, seed=110)}, seed=111)
emb["embedding.ids"] = ids.float()
entries |= emb

# Timestep embeddings (not differentiable), including the SDXL U-Net's two uses:
# time_proj (320, flip, shift 0) and add_time_proj (256, flip, shift 0) on sizes.
ts = torch.tensor([0.0, 1.0, 10.5, 999.0])
entries["temb.t"] = ts
entries["temb.flip_shift0_8"] = get_timestep_embedding(ts, 8, flip_sin_to_cos=True, downscale_freq_shift=0)
entries["temb.noflip_shift1_8"] = get_timestep_embedding(ts, 8, flip_sin_to_cos=False, downscale_freq_shift=1)
entries["temb.flip_shift1_odd7"] = get_timestep_embedding(ts, 7, flip_sin_to_cos=True, downscale_freq_shift=1)
entries["temb.noflip_shift0_odd9"] = get_timestep_embedding(ts, 9, flip_sin_to_cos=False, downscale_freq_shift=0)
entries["temb.scale2_period100_6"] = get_timestep_embedding(ts, 6, flip_sin_to_cos=False, downscale_freq_shift=1, scale=2, max_period=100)
entries["temb.sdxl_time_320"] = get_timestep_embedding(ts, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
sizes = torch.tensor([1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0])
entries["temb.sizes"] = sizes
entries["temb.sdxl_add_256"] = get_timestep_embedding(sizes, 256, flip_sin_to_cos=True, downscale_freq_shift=0)

# MSE loss, three reductions.
mse_in = lambda: {"input": randn(2, 3, 4, seed=120), "target": randn(2, 3, 4, seed=121)}
entries |= scalar_forward_backward("mse_mean", lambda input, target: F.mse_loss(input, target), mse_in(), seed=122)
entries |= scalar_forward_backward("mse_sum", lambda input, target: F.mse_loss(input, target, reduction="sum"), mse_in(), seed=123)
entries |= forward_backward("mse_none", lambda input, target: F.mse_loss(input, target, reduction="none"), mse_in(), seed=124)

# clone: some gradients are views of one buffer (cat along dim 0), which safetensors refuses.
save("ops", {k: v.clone() for k, v in entries.items()})
