"""CLIP BPE tokenizer: ids from transformers' CLIPTokenizer for the two SDXL tokenizers.

Also (re)creates the bundled vocabulary Sources/KoalaModels/Resources/clip-merges.txt from
open_clip's bpe_simple_vocab_16e6.txt.gz (the OpenAI CLIP vocabulary, MIT licence): the
first 49152 - 256 - 2 merges, in the merges.txt layout of openai/clip-vit-large-patch14.
vocab.json is not stored: CLIP derives it from the merges (256 byte symbols, the same
with "</w>", one token per merge, then <|startoftext|> and <|endoftext|>).

Writes Tests/Fixtures/tokenizer.json:
  prompts: the prompt strings
  vocab: token count and FNV-1a 64 hashes of the id-ordered tokens and of merges.txt,
         plus a sample of (token, id) pairs
  tokenizers: per folder variant, its tokenizer_config.json / special_tokens_map.json
         contents, the ids of every prompt without truncation (BOS/EOS included) and the
         77 input_ids the SDXL pipeline feeds the text encoder (padding="max_length",
         truncation=True).

transformers 5 has no slow (pure Python) CLIPTokenizer any more: `CLIPTokenizer` is the
tokenizers-backed one and `use_fast` is ignored, so that class is the reference. The
script also reports where open_clip's own SimpleTokenizer (ftfy + html unescape) differs.
"""
import gzip
import json
import os
import random
import tempfile

import open_clip
from open_clip.tokenizer import bytes_to_unicode
from transformers import AutoTokenizer, CLIPTokenizer
from transformers.utils import logging as hf_logging

from common import ROOT, FIXTURES

hf_logging.set_verbosity_error()  # over-length warnings are expected here
RESOURCE = os.path.join(ROOT, "Sources", "KoalaModels", "Resources", "clip-merges.txt")
MAX_LEN = 77


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


# --- vocabulary ------------------------------------------------------------------------
gz = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
lines = gzip.open(gz).read().decode("utf-8").split("\n")
merges = lines[1:49152 - 256 - 2 + 1]
merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
if os.path.exists(RESOURCE):
    with open(RESOURCE, encoding="utf-8", newline="") as f:
        assert f.read() == merges_text, f"{RESOURCE} differs from open_clip's vocabulary; delete it to regenerate"
else:
    with open(RESOURCE, "w", encoding="utf-8", newline="") as f:
        f.write(merges_text)
    print(f"wrote {os.path.relpath(RESOURCE, ROOT)} ({len(merges_text.encode()) / 1024:.1f} KiB)")

byte_symbols = list(bytes_to_unicode().values())
tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in merges]
tokens += ["<|startoftext|>", "<|endoftext|>"]
assert len(tokens) == 49408 and len(set(tokens)) == len(tokens)
vocab = {t: i for i, t in enumerate(tokens)}


# --- folder variants ---------------------------------------------------------------------
def added(content, normalized, special):
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
            "single_word": False, "special": special}


def sdxl_config(pad):
    """tokenizer_config.json as the SDXL / KOALA diffusers folders carry it (transformers 4.3x)."""
    decoder = {}
    if pad == "!":
        decoder["0"] = added("!", False, True)
    decoder["49406"] = added("<|startoftext|>", True, False)
    decoder["49407"] = added("<|endoftext|>", False, False)
    return {"add_prefix_space": False, "added_tokens_decoder": decoder, "additional_special_tokens": [],
            "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": True, "do_lower_case": True,
            "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": MAX_LEN, "pad_token": pad,
            "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}


def special_map(pad):
    return {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
            "unk_token": "<|endoftext|>"}


def legacy_token(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


# Older layout (Stable Diffusion 1.x/2.x and early SDXL uploads): AddedToken objects.
legacy_config = {"add_prefix_space": False, "bos_token": legacy_token("<|startoftext|>"),
                 "do_lower_case": True, "eos_token": legacy_token("<|endoftext|>"), "errors": "replace",
                 "model_max_length": MAX_LEN, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
                 "unk_token": legacy_token("<|endoftext|>")}
legacy_map = {"bos_token": {k: v for k, v in legacy_token("<|startoftext|>").items() if k != "__type"},
              "eos_token": {k: v for k, v in legacy_token("<|endoftext|>").items() if k != "__type"},
              "pad_token": "<|endoftext|>",
              "unk_token": {k: v for k, v in legacy_token("<|endoftext|>").items() if k != "__type"}}

variants = [
    ("tokenizer", sdxl_config("<|endoftext|>"), special_map("<|endoftext|>")),
    ("tokenizer_2", sdxl_config("!"), special_map("!")),
    ("legacy", legacy_config, legacy_map),
]

# Which flags win when the same token is given twice (transformers: added_tokens_decoder, then
# bos, eos, unk, pad in that order, the last one wins; special_tokens_map.json is only read
# when tokenizer_config.json has no added_tokens_decoder). Checked on the prompts that
# contain special-token text or "!".
flag_variants = [
    ("flags_eos_string_unk_normalized",
     {"eos_token": "<|endoftext|>", "unk_token": legacy_token("<|endoftext|>"), "pad_token": "!"}, None),
    ("flags_eos_normalized_unk_string",
     {"eos_token": legacy_token("<|endoftext|>"), "unk_token": "<|endoftext|>", "pad_token": "!"}, None),
    ("flags_pad_normalized_last",
     {"eos_token": dict(legacy_token("<|endoftext|>"), normalized=False),
      "unk_token": dict(legacy_token("<|endoftext|>"), normalized=False), "pad_token": legacy_token("<|endoftext|>")},
     None),
    ("flags_decoder_normalized",
     {"added_tokens_decoder": {"49406": added("<|startoftext|>", True, True), "49407": added("<|endoftext|>", True, True)},
      "pad_token": "!"},
     # ignored because the config has added_tokens_decoder
     {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}),
    ("flags_special_map_overrides_config",
     {"pad_token": "<|endoftext|>", "eos_token": legacy_token("<|endoftext|>")},
     {"pad_token": "!", "eos_token": "<|endoftext|>"}),
]
for name, config, smap in flag_variants:
    variants.append((name, dict(config, model_max_length=MAX_LEN, tokenizer_class="CLIPTokenizer"), smap))

# added_tokens.json (older saves): read only without added_tokens_decoder; its tokens are
# normalised unless they are special.
added_tokens_files = {"flags_added_tokens_json": {"!": 0, "<|startoftext|>": 49406, "<|endoftext|>": 49407}}
variants.append(("flags_added_tokens_json",
                 {"bos_token": legacy_token("<|startoftext|>"), "eos_token": legacy_token("<|endoftext|>"),
                  "unk_token": legacy_token("<|endoftext|>"), "model_max_length": MAX_LEN,
                  "tokenizer_class": "CLIPTokenizer"}, None))

# --- prompts -------------------------------------------------------------------------------
prompts = [
    "", " ", "   ", "\t\n", "a", "A", "sks", "a photo of sks dog", "a photo of sks dog in a bucket",
    "A photo of SKS dog", "a sks backpack on the beach", "photo of sks person, portrait, 85mm, bokeh",
    "a dog", "A DOG", "a Dog", "aDoG", "a photo of a cat wearing a hat",
    "An astronaut riding a green horse", "a painting of a fox sitting in a field at sunrise in the style of Claude Monet",
    "Astronaut in a jungle, cold color palette, muted colors, detailed, 8k",
    "a close-up photo of a koala bear, highly detailed, studio lighting, 4k, trending on artstation",
    "hello world", "hello  world", "hello   world", "hello\tworld", "hello\nworld", "hello\r\nworld",
    "  leading spaces", "trailing spaces   ", "\n\nnewlines first", "tabs\t\t\tbetween\t\twords",
    "mixed \t \n whitespace \x0b\x0c here",
    # contractions and apostrophes
    "don't", "Don't", "DON'T", "it's", "IT'S", "we're", "they've", "I'm", "you'll", "he'd", "can't won't shouldn't",
    "the dog's ball", "the dogs' ball", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'", "''", "'''s", "rock 'n' roll",
    "'quoted'", "\"double quoted\"", "it’s a curly apostrophe", "l'amour", "o'clock", "'sup", "'red", "'dd",
    # punctuation
    "!", "!!", "!!!", "hello!", "hello!!!", "wow!!! amazing!!!", "what?!", "?!?!", "...", "a...b", "a, b, c",
    "a,b,c", "a;b:c", "(masterpiece:1.2), (best quality)", "[[dog]]", "{cat}", "((koala))", "a -- b", "a—b–c",
    "#hashtag @mention", "50% off", "$100 & more", "a+b=c", "x*y/z", "under_score", "kebab-case-words",
    "CamelCaseWords", "snake_case_words", "dots.in.words", "email@example.com", "https://example.com/path?x=1&y=2",
    "C:\\path\\to\\file", "a|b", "<tag>", "</w>", "<|>", "~tilde~", "^caret^", "`backtick`", "a / b \\ c",
    "!hello", "!a!b!", "hey! you!", " ! ", "!?!", "end.", ".start", "one, two. three! four? five;",
    # numbers
    "0", "1", "12", "123", "2024", "3.14159", "1,000,000", "1st 2nd 3rd 4th", "1024x1024", "16:9", "f/1.8",
    "v1.5", "sdxl1.0", "a1b2c3", "99 bottles", "-5 degrees", "1e-5", "0x1F", "100%", "²³", "½ cup", "Ⅻ", "٣٤",
    "१२३", "12345678901234567890",
    # unicode: accents, scripts
    "café", "cafe\u0301", "CAFÉ", "naïve", "résumé", "Ångström", "\u212bngstr\u00f6m", "smörgåsbord", "jalapeño",
    "Straße", "STRASSE", "ẞ", "İstanbul", "ıi", "ΟΔΟΣ", "οδος", "Ωmega \u2126", "ǅemal", "ﬁne ﬂow",
    "Москва", "МОСКВА", "Київ", "ελληνικά", "עברית", "العربية", "हिन्दी", "ไทย", "한국어", "조선",
    "日本語のテキスト", "東京タワー", "中文提示词", "一只可爱的考拉", "ｆｕｌｌｗｉｄｔｈ", "ＡＢＣ１２３",
    "Ｈｅｌｌｏ！", "カタカナ", "ひらがな", "mixed 中文 and english", "Zürich and São Paulo",
    "e\u0301\u0301", "a\u0308", "\u0301", "x\u20dd", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    # emoji and symbols
    "😀", "😀😀", "a 😀 b", "👍🏽", "👨‍👩‍👧‍👦 family", "🇺🇸🇯🇵", "❤️", "☕ coffee", "✨sparkles✨", "🐨 koala",
    "★☆", "©®™", "→←↑↓", "∑∫√∞", "♪♫", "°C", "€£¥", "§¶", "•·", "…", "«guillemets»", "„Anführungszeichen“",
    # whitespace oddities (which count as \s for the reference)
    "a\u00a0b", "a\u3000b", "a\u2003b", "a\u2028b", "a\u2029b", "a\u0085b", "a\u1680b", "a\u202fb", "a\u205fb",
    "a\u200ab", "a\u200bb", "a\ufeffb", "a\u180eb", "a\x1cb\x1dc\x1ed\x1fe", "a\x00b", "a\x07b", "a\x7fb",
    "zero\u200dwidth\u200cjoiner", "soft\u00adhyphen",
    # HTML entities and markup (not unescaped by the reference)
    "&amp;", "Tom &amp; Jerry", "&lt;b&gt;bold&lt;/b&gt;", "&quot;quoted&quot;", "&#39;", "&nbsp;space", "<b>bold</b>",
    "&#x1F600;", "a&b", "AT&T",
    # special tokens inside the text
    "<|startoftext|>", "<|endoftext|>", "a <|endoftext|> b", "a<|endoftext|>b", "<|STARTOFTEXT|>", "<|EndOfText|>",
    "a<|startoftext|>b<|endoftext|>c", "<|startoftext|><|endoftext|>", "<|endoftext|>!", "!<|startoftext|>!",
    "<|endoftext", "|endoftext|>", "<<|endoftext|>>", "<|startoftext|> hello <|endoftext|> world",
    # long runs
    "a" * 40, "aaaa bbbb cccc dddd", "ab" * 30, "!" * 30, "." * 50, "1" * 30, "😀" * 20, "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "lorem ipsum dolor sit amet consectetur adipiscing elit",
]

long_prompts = [
    " ".join(["a beautiful landscape with mountains"] * 20),
    "masterpiece, best quality, ultra-detailed, " * 15,
    ", ".join(f"tag{i}" for i in range(60)),
    " ".join(str(i) for i in range(100)),
    "sks " * 80,
    "word " * 75, "word " * 74, "word " * 76, "word " * 73,
    "hello! " * 40,
    "日本語 " * 50,
    ("A highly detailed photograph of a sks dog sitting on a red velvet couch in a Victorian living room, "
     "soft window light, shallow depth of field, shot on a Canon EOS R5 with a 50mm f/1.2 lens, film grain, "
     "warm color grading, intricate wallpaper patterns, antique furniture, oil paintings on the walls, "
     "a crackling fireplace in the background, cinematic composition, award-winning photography"),
]
prompts += long_prompts

# Seeded compositions of the pieces above, to cover interactions between categories.
rng = random.Random(1234)
pieces = ["sks", "dog", "Cat", "!", "!!", "'s", "don't", "123", "4.5", "café", "日本", "😀", "&amp;", "<|endoftext|>",
          "(", ")", ",", ".", "-", "_", "  ", "\t", "\n", "Ünïcödé", "naïve", "x2", "HDR", "8k", "ultra", "photo",
          "of", "a", "the", "in", "#", "@", "/", "koala", "Straße", "ΣΟΦΙΑ", "🐨", "ﬁ", "\u00a0", "’", "'"]
while len(prompts) < 290:
    n = rng.randint(2, 12)
    sep = rng.choice(["", " ", " ", " ", ", "])
    prompts.append(sep.join(rng.choice(pieces) for _ in range(n)))

assert len(prompts) == len(set(prompts)), "duplicate prompts"


# --- reference ids --------------------------------------------------------------------------
def write_folder(path, config, smap, added_tokens=None):
    os.makedirs(path, exist_ok=True)
    if added_tokens is not None:
        with open(os.path.join(path, "added_tokens.json"), "w") as f:
            json.dump(added_tokens, f, indent=2)
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(merges_text)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if smap is not None:
        with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
            json.dump(smap, f, indent=2)


out_variants = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, config, smap in variants:
        folder = os.path.join(tmp, name)
        write_folder(folder, config, smap, added_tokens_files.get(name))
        tok = CLIPTokenizer.from_pretrained(folder)
        auto = AutoTokenizer.from_pretrained(folder, use_fast=False)
        assert tok.model_max_length == MAX_LEN
        full, padded = [], []
        indices = list(range(len(prompts)))
        if name.startswith("flags_"):
            indices = [i for i, p in enumerate(prompts) if "<|" in p.lower() or "!" in p]
        for p in (prompts[i] for i in indices):
            ids = tok(p).input_ids
            ids_auto = auto(p).input_ids
            assert ids == ids_auto, f"AutoTokenizer differs on {p!r}"
            full.append(ids)
            batch = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True)
            padded.append(batch.input_ids)
            assert len(batch.input_ids) == MAX_LEN
        out_variants[name] = {"tokenizer_config": config, "pad_token_id": tok.pad_token_id, "ids": full}
        if smap is not None:
            out_variants[name]["special_tokens_map"] = smap
        if name in added_tokens_files:
            out_variants[name]["added_tokens"] = added_tokens_files[name]
        if len(indices) < len(prompts):
            out_variants[name]["indices"] = indices
        # Padding is covered by the two SDXL variants; the others only need the full ids.
        if name in ("tokenizer", "tokenizer_2"):
            out_variants[name]["input_ids"] = padded
        flags = {t.content: t.normalized for t in tok.backend_tokenizer.get_added_tokens_decoder().values()}
        print(f"{name}: pad {tok.pad_token!r} ({tok.pad_token_id}), {len(indices)} prompts, "
              f"{sum(len(x) > MAX_LEN for x in full)} over {MAX_LEN} tokens; normalized flags {flags}")

# How open_clip's original tokenizer (ftfy, html.unescape) compares: informational only.
oc = open_clip.SimpleTokenizer()
diff = [p for p, ids in zip(prompts, out_variants["tokenizer"]["ids"])
        if [oc.sot_token_id] + oc.encode(p) + [oc.eot_token_id] != ids]
print(f"open_clip SimpleTokenizer differs from transformers on {len(diff)} of {len(prompts)} prompts, e.g. "
      + ", ".join(repr(p) for p in diff[:8]))

sample_ids = list(range(0, 49408, 97)) + [0, 255, 256, 511, 512, 49405, 49406, 49407]
fixture = {
    "prompts": prompts,
    "max_length": MAX_LEN,
    "vocab": {
        "count": len(tokens),
        "tokens_fnv1a64": fnv1a64("\n".join(tokens)),
        "merges_fnv1a64": fnv1a64(merges_text),
        "sample": [[tokens[i], i] for i in sorted(set(sample_ids))],
    },
    "tokenizers": out_variants,
}
path = os.path.join(FIXTURES, "tokenizer.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1024:.1f} KiB, {len(prompts)} prompts)")
