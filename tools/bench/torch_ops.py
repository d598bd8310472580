"""Times KoalaBench's cases in PyTorch/diffusers on this CPU for `just bench`.

Usage:
  torch_ops.py NAME...   prints {name: median seconds} as JSON for the names it knows.
  torch_ops.py --isolated [--warmup 0|1] [--min-time S] [--max-runs N] NAME
                         times one case (a model case, run in a process of its own) and
                         prints {"seconds": median, "peakRSSMiB": this process's ru_maxrss}.
Exits 3 when torch is not installed. Same thread count as KoalaBooth (all cores).
"""
import argparse
import json
import os
import resource
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch is not installed", file=sys.stderr)
    sys.exit(3)

torch.set_num_threads(os.cpu_count())


def timed(fn, min_time=1.0, max_runs=10, warmup=True):
    if warmup:
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


# KoalaBooth's UNet2DConditionConfig.koala700M (Sources/KoalaModels/UNet/UNet2DConditionConfig.swift).
KOALA_700M = dict(
    sample_size=128,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type=None,
    block_out_channels=(320, 640, 1280),
    layers_per_block=1,
    transformer_layers_per_block=(1, 2, 5),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
KOALA_700M_PARAMS = 782_822_724


def unet_case(mode, size=512):
    """KOALA-700M U-Net, batch 1, `size` px (latent size/8), the same work as
    KoalaBench's ModelBench:
    - `forward`: no_grad forward.
    - `lora-step`: recipes/koala-700m-lora-cpu.toml's step: PEFT LoRA rank 8, alpha 8 on
      to_q/to_k/to_v/to_out.0 (diffusers' add_adapter, PEFT's default init), MSE loss
      backward, clip_grad_norm_(1.0), torch.optim.AdamW(lr 1e-4, weight decay 1e-4).
    - `full-step` / `full-step-ckpt`: every weight trainable, MSE loss backward,
      bitsandbytes.optim.Adam8bit(lr 5e-5) step (it runs on CPU tensors in
      bitsandbytes 0.50: uint8 states, blockwise absmax); `-ckpt` with diffusers'
      gradient checkpointing (non-reentrant torch.utils.checkpoint, so every weight
      inside a checkpointed block still gets its gradient: asserted below)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**KOALA_700M)
    n = sum(p.numel() for p in unet.parameters())
    assert n == KOALA_700M_PARAMS, f"KOALA-700M config drifted: {n} parameters"
    g = torch.Generator().manual_seed(0)
    lat = size // 8
    sample = torch.randn(1, 4, lat, lat, generator=g)
    ehs = torch.randn(1, 77, 2048, generator=g)
    cond = {"text_embeds": torch.randn(1, 1280, generator=g),
            "time_ids": torch.tensor([[float(size), size, 0, 0, size, size]])}
    target = torch.randn(1, 4, lat, lat, generator=g)

    def forward():
        return unet(sample, 500, encoder_hidden_states=ehs, added_cond_kwargs=cond).sample

    if mode == "forward":
        unet.requires_grad_(False)

        def run():
            with torch.no_grad():
                forward()
        return run
    unet.train()
    if mode == "lora-step":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        params = [p for p in unet.parameters() if p.requires_grad]
        assert params and all("lora_" in k for k, p in unet.named_parameters() if p.requires_grad)
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)
    else:
        import bitsandbytes as bnb

        if mode == "full-step-ckpt":
            unet.enable_gradient_checkpointing()
            assert unet.is_gradient_checkpointing
        unet.requires_grad_(True)
        params = list(unet.parameters())
        opt = bnb.optim.Adam8bit(params, lr=5e-5)

    def run():
        t0 = time.perf_counter()
        loss = F.mse_loss(forward(), target)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in params), f"{mode}: no finite loss or no gradient"
        t1 = time.perf_counter()
        if mode == "lora-step":
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        # Where the time went, beside the results (KoalaBench prints the same split).
        print(f"    (forward+backward {t1 - t0:.2f} s, optimizer {time.perf_counter() - t1:.2f} s)", file=sys.stderr)
    return run


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate_case(folder, variant, size):
    """Text-to-image with the pipeline KoalaBench wrote under .build-bench (it creates
    the folder before this runs): DPM-Solver++, 25 steps, guidance 7.5, VAE decode."""
    import diffusers
    import transformers
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    path = os.path.join(ROOT, ".build-bench", folder)
    pipe = StableDiffusionXLPipeline.from_pretrained(path, dtype=torch.float32, variant=variant)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def run():
        pipe("a photo of a koala", num_inference_steps=25, guidance_scale=7.5, width=size, height=size,
             generator=torch.Generator().manual_seed(0), output_type="np")
    return run


def vae_decode_case(size, tiled):
    """The SDXL/KOALA VAE (fp16-fix config, random weights) decoding one image's latents,
    whole or with enable_tiling() (512 px tiles, its sample_size), as KoalaBench's VAEBench."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        sample_size=512, scaling_factor=0.13025, force_upcast=False).eval()
    if tiled:
        vae.enable_tiling()
    latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))

    def run():
        with torch.no_grad():
            vae.decode(latents)
    return run


CASES = {
    "sgemm 2048x2048x2048": lambda: sgemm(2048),
    "sgemm 4096x4096x4096": lambda: sgemm(4096),
    "conv2d 3x3 320ch 128x128 forward": lambda: conv(False),
    "conv2d 3x3 320ch 128x128 backward": lambda: conv(True),
    "attention 4096 tok 10x64 forward": lambda: attention(False),
    "attention 4096 tok 10x64 backward": lambda: attention(True),
    "unet koala-700m 512 forward": lambda: unet_case("forward"),
    "unet koala-700m 512 lora-step": lambda: unet_case("lora-step"),
    "unet koala-700m 512 full-step": lambda: unet_case("full-step"),
    "unet koala-700m 512 full-step checkpointed": lambda: unet_case("full-step-ckpt"),
    "unet koala-700m 1024 full-step checkpointed": lambda: unet_case("full-step-ckpt", 1024),
    "generate tiny 64px 25 steps cfg": lambda: generate_case("tiny", None, 64),
    "generate koala-700m 512 25 steps cfg": lambda: generate_case("koala-700m-fp16", "fp16", 512),
    **{f"vae-decode sdxl {size} {'tiled' if tiled else 'untiled'}": (lambda size=size, tiled=tiled: vae_decode_case(size, tiled))
       for size in (1024, 2048) for tiled in (False, True)},
}

if __name__ == "__main__":
    if "--isolated" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--isolated", action="store_true")
        ap.add_argument("--warmup", type=int, default=1)
        ap.add_argument("--min-time", type=float, default=1.0)
        ap.add_argument("--max-runs", type=int, default=10)
        ap.add_argument("name")
        a = ap.parse_args()
        if a.name not in CASES:
            print(f"no PyTorch case named {a.name!r}", file=sys.stderr)
            sys.exit(2)
        s = timed(CASES[a.name](), a.min_time, a.max_runs, bool(a.warmup))
        print(json.dumps({"seconds": s, "peakRSSMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        sys.exit(0)
    result = {}
    for name in sys.argv[1:]:
        if name in CASES:
            result[name] = timed(CASES[name]())
    print(json.dumps(result))
