"""AutoencoderKL (diffusers) with tiny channels and perturbed weights: weights, images,
posterior mean/logvar, decoded latents, tiled encode/decode (vae.enable_tiling() with a
small sample_size so the inputs really are tiled) and the gradient of sum(decode(z) * g)
with respect to z. Also prints parameter counts of full-size configs for the tests."""
import torch
from diffusers import AutoencoderKL
from common import save, gen, randn

TINY = dict(block_out_channels=[8, 16], layers_per_block=2, norm_num_groups=4, latent_channels=4,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
            sample_size=8, scaling_factor=0.5)

entries = {}
torch.manual_seed(0)
vae = AutoencoderKL(**TINY).eval()
with torch.no_grad():  # non-trivial norms and biases, so the test sees them
    for p in vae.parameters():
        p.add_(torch.randn(p.shape, generator=gen(p.numel())) * 0.1)
for k, v in vae.state_dict().items():
    entries[f"weights.{k}"] = v

image = (torch.rand(2, 3, 16, 24, generator=gen(11)) * 2 - 1)
z = randn(2, 4, 8, 12, seed=12)
with torch.no_grad():
    post = vae.encode(image).latent_dist
    entries["image"] = image
    entries["mean"] = post.mean
    entries["logvar"] = post.logvar
    entries["latents"] = z
    entries["decoded"] = vae.decode(z).sample
    vae.enable_tiling()
    assert vae.tile_latent_min_size == 4 and vae.tile_sample_min_size == 8
    tpost = vae.encode(image).latent_dist
    entries["tiled.mean"] = tpost.mean
    entries["tiled.logvar"] = tpost.logvar
    entries["tiled.decoded"] = vae.decode(z).sample
    vae.disable_tiling()
    # tiling must really change the result, or the tiled test would prove nothing
    assert (entries["tiled.decoded"] - entries["decoded"]).abs().max() > 1e-3

zg = randn(1, 4, 5, 6, seed=13).requires_grad_(True)
out = vae.decode(zg).sample
g = randn(*out.shape, seed=14)
(out * g).sum().backward()
entries["grad.latents"] = zg.detach()
entries["grad.g"] = g
entries["grad.out"] = out.detach()
entries["grad.grad_latents"] = zg.grad
save("vae", entries)

# Parameter counts recorded in AutoencoderKLTests (not stored in the fixture).
SDXL = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32, latent_channels=4,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
            sample_size=512, scaling_factor=0.13025, force_upcast=False)
with torch.device("meta"):
    for name, cfg in [("sdxl", SDXL),
                      ("tiny without attention or quant convs",
                       dict(TINY, mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False))]:
        n = sum(p.numel() for p in AutoencoderKL(**cfg).parameters())
        print(f"parameters, {name}: {n}")
