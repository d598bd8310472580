"""Image I/O reference data (Pillow): small test images in Tests/Fixtures/images/ and
Pillow's decoded pixels / resize outputs in Tests/Fixtures/imageio.safetensors.

Every expected image is stored as a float16 tensor [H, W, 3] holding 0..255 (exact in
float16), to keep the file small. Conventions KoalaImageIO follows and this script
encodes:
- transparency is composited on white (Pillow: alpha_composite onto opaque white);
- JPEG EXIF orientation is applied (ImageOps.exif_transpose);
- CMYK JPEGs use Adobe's inverted polarity (Pillow always assumes it);
- 16-bit samples keep their high byte (Pillow's RGB;16B/RGBA;16B/LA;16B). For 16-bit
  grayscale Pillow gives mode I;16, whose convert("RGB") clips every value above 255 to
  white; we expect the high byte there too (value >> 8) rather than that clipping.
Pillow cannot write 16-bit colour or interlaced PNGs, so write_png() below writes those
chunk by chunk (zlib + CRC from the standard library); Pillow decodes them for the
expected pixels.
"""
import io
import json
import os
import struct
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin
from safetensors.torch import save_file

from common import FIXTURES, ROOT

IMAGES = os.path.join(FIXTURES, "images")
os.makedirs(IMAGES, exist_ok=True)
entries = {}


def path(name):
    return os.path.join(IMAGES, name)


def expect(key, im):
    """Records Pillow's pixels for `im` (RGB after white compositing) under `key`."""
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    entries[key] = torch.from_numpy(arr.copy()).to(torch.float16)


def synthetic(w, h, seed):
    """A photo-like RGB image: gradients, a disc, stripes and mild noise; asymmetric so
    a wrong rotation or flip cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 5.0)
    disc = (x - 0.3 * w) ** 2 + (y - 0.35 * h) ** 2 < (0.2 * min(w, h)) ** 2
    r[disc], g[disc], b[disc] = 250, 220, 30
    r[:, : max(1, w // 10)] = 20  # a dark band on the left edge only
    img = np.stack([r, g, b], -1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- minimal PNG writer

def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(name, samples, color_type, bit_depth, interlace=False, extra=b""):
    """samples: uint8/uint16 array [H, W, channels] (channels per colour type)."""
    h, w = samples.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"

    def scanlines(block):
        return b"".join(b"\x00" + block[i].astype(dtype).tobytes() for i in range(block.shape[0]))

    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += scanlines(sub)
    else:
        raw = scanlines(samples)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    with open(path(name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- JPEG

base = Image.fromarray(synthetic(48, 32, 1))
base.save(path("jpeg_baseline.jpg"), quality=90)
base.save(path("jpeg_progressive.jpg"), quality=90, progressive=True)
base.save(path("jpeg_444.jpg"), quality=95, subsampling=0)
base.convert("L").save(path("jpeg_gray.jpg"), quality=90)
# Pillow's RGB->CMYK leaves K at 0; give K a gradient so the black channel is exercised.
cmyk = np.asarray(base.convert("CMYK")).copy()
cmyk[..., 3] = np.linspace(0, 200, 48, dtype=np.float64).astype(np.uint8)[None, :]
Image.fromarray(cmyk, "CMYK").save(path("jpeg_cmyk.jpg"), quality=90)
for name in ["jpeg_baseline", "jpeg_progressive", "jpeg_444", "jpeg_gray", "jpeg_cmyk"]:
    with Image.open(path(name + ".jpg")) as im:
        expect(name, im)

small = Image.fromarray(synthetic(24, 16, 2))
for o in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = o
    small.save(path(f"jpeg_orientation_{o}.jpg"), quality=92, exif=exif.tobytes())
    with Image.open(path(f"jpeg_orientation_{o}.jpg")) as im:
        expect(f"jpeg_orientation_{o}", ImageOps.exif_transpose(im))
# Big-endian ("MM") TIFF header, written by hand: Pillow writes little-endian.
tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
small.save(path("jpeg_orientation_6_bigendian.jpg"), quality=92, exif=b"Exif\x00\x00" + tiff)
with Image.open(path("jpeg_orientation_6_bigendian.jpg")) as im:
    expect("jpeg_orientation_6_bigendian", ImageOps.exif_transpose(im))

# Bad inputs.
with open(path("jpeg_baseline.jpg"), "rb") as f:
    jpeg = f.read()
with open(path("truncated.jpg"), "wb") as f:
    f.write(jpeg[: len(jpeg) * 55 // 100])
# A valid SOI and APP0 followed by a frame header claiming 0 components.
with open(path("corrupt.jpg"), "wb") as f:
    f.write(jpeg[:20] + b"\xff\xc0\x00\x08\x08\x00\x10\x00\x10\x00" + b"\x00" * 64)
with open(path("not_an_image.jpg"), "w") as f:
    f.write("These are not the pixels you are looking for.\n")
open(path("empty.jpg"), "wb").close()
Image.fromarray(synthetic(8, 8, 3)).save(path("animation.gif"))
for name in ["truncated.jpg", "corrupt.jpg"]:
    try:
        with Image.open(path(name)) as im:
            im.load()
        raise SystemExit(f"Pillow decoded {name}; it should not")
    except (OSError, SyntaxError):
        pass

# ---------------------------------------------------------------- PNG

rgb = synthetic(32, 24, 4)
Image.fromarray(rgb).save(path("png_rgb8.png"))
alpha = np.clip(np.mgrid[0:24, 0:32][1] * 8, 0, 255).astype(np.uint8)  # 0 (clear) .. 248
Image.fromarray(np.dstack([rgb, alpha])).save(path("png_rgba8.png"))
gray = np.asarray(Image.fromarray(rgb).convert("L"))
Image.fromarray(gray).save(path("png_gray8.png"))
Image.fromarray(np.dstack([gray, alpha]), "LA").save(path("png_gray_alpha.png"))
Image.fromarray(gray > 128).save(path("png_gray1.png"))
im = Image.fromarray(gray)
im.info["transparency"] = int(gray[5, 5])
im.save(path("png_gray_trns.png"), transparency=int(gray[5, 5]))
Image.fromarray(rgb).save(path("png_rgb_trns.png"), transparency=tuple(int(v) for v in rgb[3, 7]))
pal = Image.fromarray(rgb).quantize(colors=40, method=Image.Quantize.MEDIANCUT)
pal.save(path("png_palette.png"))
trns = bytes(255 if i % 3 else (i * 6) % 256 for i in range(40))
pal.save(path("png_palette_trns.png"), transparency=trns)
Image.fromarray(rgb).quantize(colors=12).save(path("png_palette4.png"), bits=4)

rng = np.random.default_rng(5)
rgb16 = (rgb.astype(np.uint16) << 8) | rng.integers(0, 256, rgb.shape, dtype=np.uint16)
alpha16 = (alpha.astype(np.uint16) << 8) | 0x7F
write_png("png_rgb16.png", rgb16, 2, 16)
write_png("png_rgba16.png", np.dstack([rgb16, alpha16]), 6, 16)
gray16 = (gray.astype(np.uint16) << 8) | rng.integers(0, 256, gray.shape, dtype=np.uint16)
write_png("png_gray16.png", gray16[..., None], 0, 16)
write_png("png_interlaced.png", rgb, 2, 8, interlace=True)
write_png("png_interlaced_gray_alpha.png", np.dstack([gray, alpha]), 4, 8, interlace=True)

for name in ["png_rgb8", "png_rgba8", "png_gray8", "png_gray_alpha", "png_gray1", "png_gray_trns", "png_rgb_trns",
             "png_palette", "png_palette_trns", "png_palette4", "png_rgb16", "png_rgba16", "png_interlaced",
             "png_interlaced_gray_alpha"]:
    with Image.open(path(name + ".png")) as im:
        expect(name, im)
with Image.open(path("png_gray16.png")) as im:
    assert im.mode.startswith("I;16"), im.mode
    hi = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    expect("png_gray16", Image.fromarray(hi))

# Text chunks: tEXt, zTXt (compressed) and iTXt, plus text after IDAT is not made by Pillow.
info = PngImagePlugin.PngInfo()
info.add_text("prompt", "a photo of sks dog, café au lait")
info.add_text("Comment", "compressed " * 20, zip=True)
info.add_itxt("title", "コアラ 🐨", lang="ja", tkey="title")
Image.fromarray(rgb[:8, :8]).save(path("png_text.png"), pnginfo=info)
with Image.open(path("png_text.png")) as im:
    im.load()
    text = [[k, v] for k, v in im.text.items()]

with open(path("png_rgb8.png"), "rb") as f:
    png = f.read()
with open(path("truncated.png"), "wb") as f:
    f.write(png[: len(png) * 55 // 100])
idat = png.index(b"IDAT")
corrupt = bytearray(png)
corrupt[idat + 20] ^= 0xFF  # breaks the IDAT CRC
with open(path("corrupt.png"), "wb") as f:
    f.write(bytes(corrupt))
Image.fromarray(synthetic(20, 14, 6)).save(path("small.png"))

# ---------------------------------------------------------------- resize

source = synthetic(61, 47, 7)
Image.fromarray(source).save(path("resize_source.png"))
src = Image.fromarray(source)
filters = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "box": Image.BOX}
cases = [("lanczos", 23, 17), ("lanczos", 20, 20), ("lanczos", 61, 20), ("lanczos", 30, 47), ("lanczos", 70, 55),
         ("bicubic", 30, 23), ("bicubic", 64, 40), ("lanczos", 80, 30), ("bilinear", 15, 40), ("box", 20, 15), ("box", 61, 12)]
for f, w, h in cases:
    expect(f"resize.{f}.{w}x{h}", src.resize((w, h), filters[f]))


def torchvision_fit(im, size):
    """torchvision Resize(int): shorter side to `size`, longer int(size * long / short)."""
    w, h = im.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)
    return (size, new_long) if w <= h else (new_long, size)


for size in [24, 31]:
    w, h = torchvision_fit(src, size)
    resized = src.resize((w, h), Image.LANCZOS)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    expect(f"fit_center.{size}", resized.crop((left, top, left + size, top + size)))
    entries[f"fit_center.{size}.offset"] = torch.tensor([left, top], dtype=torch.float16)

out = os.path.join(FIXTURES, "imageio.safetensors")
save_file({k: v.contiguous() for k, v in entries.items()}, out)
with open(os.path.join(FIXTURES, "imageio.json"), "w") as f:
    json.dump({"png_text": text}, f, ensure_ascii=False, indent=1)
total = sum(os.path.getsize(path(n)) for n in os.listdir(IMAGES))
print(f"wrote {os.path.relpath(out, ROOT)} ({os.path.getsize(out) / 1024:.1f} KiB, {len(entries)} tensors); "
      f"images: {len(os.listdir(IMAGES))} files, {total / 1024:.1f} KiB")
