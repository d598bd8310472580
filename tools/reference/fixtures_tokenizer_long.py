"""CLIP BPE on very long words: ids from transformers' CLIPTokenizer for words of up to
60,000 characters, where a merge order mistake in a faster BPE would show.

Writes Tests/Fixtures/tokenizer_long.json:
  words: per case, the text, its ids without truncation (BOS/EOS included) and the 77
         input_ids the SDXL pipeline feeds the text encoder (padding="max_length",
         truncation=True), with the SDXL `tokenizer` folder's configuration and the
         bundled vocabulary (Sources/KoalaModels/Resources/clip-merges.txt).
"""
import json
import os
import random
import tempfile

from transformers import CLIPTokenizer
from transformers.utils import logging as hf_logging

from common import ROOT, FIXTURES

hf_logging.set_verbosity_error()  # over-length warnings are expected here
MAX_LEN = 77
RESOURCE = os.path.join(ROOT, "Sources", "KoalaModels", "Resources", "clip-merges.txt")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


with open(RESOURCE, encoding="utf-8", newline="") as f:
    merges_text = f.read()
symbols = bytes_to_unicode()
tokens = symbols + [s + "</w>" for s in symbols]
tokens += [line.replace(" ", "") for line in merges_text.split("\n")[1:] if line]
tokens += ["<|startoftext|>", "<|endoftext|>"]
vocab = {t: i for i, t in enumerate(tokens)}

rng = random.Random(2026)
cases = {
    "letters_60000": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(60_000)),
    "ab_5000": "".join(rng.choice("ab") for _ in range(5_000)),
    "koala_2000x": "koala" * 2_000,
    "mixed_scripts_5000": "".join(rng.choice("abcdeèéfghiïjklmnoöpqrsßtuüvwxyzçñ日本語中文한국어Москваελ") for _ in range(5_000)),
    "words_and_long_word": "a photo of " + "".join(rng.choice("xyz") for _ in range(3_000)) + " dog",
}

out = {}
with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(merges_text)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "pad_token": "<|endoftext|>", "model_max_length": MAX_LEN, "do_lower_case": True,
                   "tokenizer_class": "CLIPTokenizer"}, f)
    tok = CLIPTokenizer.from_pretrained(tmp)
    for name, text in cases.items():
        full = tok(text).input_ids
        padded = tok(text, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        out[name] = {"text": text, "ids": full, "input_ids": padded}
        print(f"{name}: {len(text)} characters, {len(full) - 2} BPE ids")

path = os.path.join(FIXTURES, "tokenizer_long.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump({"max_length": MAX_LEN, "words": out}, f, ensure_ascii=False, separators=(",", ":"))
print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB)")
