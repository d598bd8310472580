#!/bin/sh
# Re-renders the six pictures of the "robot-toy" example subject.
# Needs: povray (Debian package `povray`, tested with POV-Ray 3.7.0.10) and
# Python 3 with Pillow (Debian `python3-pil`, or `pip install pillow`) for the
# PNG -> JPEG conversion.  Run from anywhere: it works in this folder.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for shot in 1 2 3 4 5 6; do
  povray robot-toy.pov Declare=Shot=$shot +W512 +H512 +A0.2 +AM2 +R3 \
    +FN +O"$tmp/robot-toy-$shot.png" -D -V -GA +WL0
done
python3 - "$tmp" <<'PY'
import sys
from PIL import Image
tmp = sys.argv[1]
for shot in range(1, 7):
    im = Image.open(f"{tmp}/robot-toy-{shot}.png").convert("RGB")
    im.save(f"robot-toy-{shot}.jpg", "JPEG", quality=85, optimize=True)
    print(f"robot-toy-{shot}.jpg", im.size)
PY
