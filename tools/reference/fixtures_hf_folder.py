"""A pipeline folder as today's libraries save it: diffusers 0.42
`StableDiffusionXLPipeline.save_pretrained` with transformers 5, whose `CLIPTokenizer`
writes `tokenizer.json` + `tokenizer_config.json` and no `vocab.json`/`merges.txt`.

The pipeline is tiny and random, stored in float16 (a two-block SDXL-style U-Net, a four-block VAE, two
2-layer CLIP text encoders) and its tokenizers use a reduced OpenAI CLIP vocabulary (the
byte symbols, the first MERGES merges, the two special tokens), so the folder stays small.
The tokenizers start as the older SDXL folders carry them (vocab.json, merges.txt and
SDXL's tokenizer_config.json, `tokenizer_2` padding with "!"), are loaded with
`CLIPTokenizer.from_pretrained` and saved with the pipeline, as a user re-saving a
downloaded KOALA folder gets them.

Writes:
  Tests/Fixtures/hf-folder/        the saved folder, as diffusers wrote it
  Tests/Fixtures/hf_folder.json    per tokenizer: pad_token_id, the ids of every prompt of
                                   Tests/Fixtures/tokenizer.json without truncation (BOS/EOS
                                   included) and the 77 input_ids the pipeline feeds the text
                                   encoder; the merges form tokenizer.json uses
  Tests/Fixtures/hf_folder.safetensors  `<case>.image` [1, 64, 64, 3] 8-bit values (float16) and
                                   `<case>.latents`, from the saved folder loaded back
"""
import gzip
import json
import os
import shutil
import tempfile

import open_clip
import torch
from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from open_clip.tokenizer import bytes_to_unicode
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.utils import logging as hf_logging

from common import FIXTURES, ROOT

hf_logging.set_verbosity_error()  # over-length warnings are expected for the long prompts
MERGES = 1000
MAX_LEN = 77
FOLDER = os.path.join(FIXTURES, "hf-folder")
PROMPT = "a photo of a koala wearing sunglasses"
NEGATIVE = "blurry, low quality"
# name: (scheduler, steps, guidance, seed)
CASES = {"euler_neg_seed42": ("euler", 4, 7.5, 42), "dpm_neg_seed5": ("dpm", 4, 7.5, 5)}


def reduced_vocabulary():
    gz = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(gz).read().decode("utf-8").split("\n")[1:1 + MERGES]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(tokens)) == len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def sdxl_tokenizer_config(pad, vocab):
    """tokenizer_config.json as the SDXL / KOALA folders carry it (transformers 4.3x)."""
    def added(content, normalized, special):
        return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
                "single_word": False, "special": special}
    decoder = {str(vocab["<|startoftext|>"]): added("<|startoftext|>", True, False),
               str(vocab["<|endoftext|>"]): added("<|endoftext|>", False, False)}
    if pad == "!":
        decoder[str(vocab["!"])] = added("!", False, True)
    return {"add_prefix_space": False, "added_tokens_decoder": decoder, "additional_special_tokens": [],
            "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": True, "do_lower_case": True,
            "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": MAX_LEN, "pad_token": pad,
            "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}


def legacy_tokenizer(tmp, name, pad, vocab, merges):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8", newline="") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(sdxl_tokenizer_config(pad, vocab), f, indent=2, ensure_ascii=False)
    return CLIPTokenizer.from_pretrained(d)


def text_encoder(vocab, act, projection):
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=MAX_LEN, hidden_act=act, projection_dim=32,
                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                            pad_token_id=1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_pipeline(tmp):
    vocab, merges = reduced_vocabulary()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type=None, norm_num_groups=4, attention_head_dim=(2, 4), cross_attention_dim=64,
        transformer_layers_per_block=1, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64, scaling_factor=0.13025, force_upcast=False)
    # Random weights are drawn small so that the tiny model's images are not saturated noise.
    for model in (unet, vae):
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.mul_(0.5)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae, unet=unet, scheduler=scheduler,
        text_encoder=text_encoder(vocab, "quick_gelu", False), text_encoder_2=text_encoder(vocab, "gelu", True),
        tokenizer=legacy_tokenizer(tmp, "tokenizer", "<|endoftext|>", vocab, merges),
        tokenizer_2=legacy_tokenizer(tmp, "tokenizer_2", "!", vocab, merges))


def main():
    torch.set_num_threads(1)
    with open(os.path.join(FIXTURES, "tokenizer.json"), encoding="utf-8") as f:
        prompts = json.load(f)["prompts"]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(tmp)
        shutil.rmtree(FOLDER, ignore_errors=True)
        # Stored in float16 (as many published folders are) to halve the fixture; read back as float32.
        pipe.to(torch.float16).save_pretrained(FOLDER)

    # What KoalaBooth must read: the folder as saved, loaded back by diffusers.
    pipe = StableDiffusionXLPipeline.from_pretrained(FOLDER, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out = {"prompt_count": len(prompts), "tokenizers": {}}
    for name in ("tokenizer", "tokenizer_2"):
        files = sorted(os.listdir(os.path.join(FOLDER, name)))
        assert "vocab.json" not in files and "merges.txt" not in files and "tokenizer.json" in files, files
        tok = getattr(pipe, name)
        with open(os.path.join(FOLDER, name, "tokenizer.json"), encoding="utf-8") as f:
            merges = json.load(f)["model"]["merges"]
        ids = [tok(p).input_ids for p in prompts]
        input_ids = [tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids for p in prompts]
        # The other merges form ("a b" strings, tokenizers < 0.20) gives the same ids.
        other = json.load(open(os.path.join(FOLDER, name, "tokenizer.json"), encoding="utf-8"))
        other["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]
        assert [e.ids for e in Tokenizer.from_str(json.dumps(other)).encode_batch(prompts)] == ids
        out["tokenizers"][name] = {"files": files, "pad_token_id": tok.pad_token_id, "vocab_size": len(tok),
                                   "model_max_length": tok.model_max_length,
                                   "merges_form": "pairs" if isinstance(merges[0], list) else "strings",
                                   "ids": ids, "input_ids": input_ids}
    path = os.path.join(FIXTURES, "hf_folder.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB)")

    schedulers = {"euler": EulerDiscreteScheduler.from_config(pipe.scheduler.config),
                  "dpm": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)}
    images = {}
    for name, (sched, steps, guidance, seed) in CASES.items():
        pipe.scheduler = schedulers[sched]
        results = {}
        for output_type in ("np", "latent"):
            with torch.no_grad():
                results[output_type] = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps,
                                            guidance_scale=guidance, width=64, height=64, output_type=output_type,
                                            generator=torch.Generator().manual_seed(seed)).images
        images[f"{name}.image"] = (torch.from_numpy(results["np"]) * 255).round().to(torch.float16)
        images[f"{name}.latents"] = results["latent"].float()
    path = os.path.join(FIXTURES, "hf_folder.safetensors")
    save_file({k: v.contiguous() for k, v in images.items()}, path)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(FOLDER) for f in fs)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB) and "
          f"{os.path.relpath(FOLDER, ROOT)}/ ({size / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
