# KoalaBooth tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

apt_packages := "libopenblas-dev libdnnl-dev libjpeg-dev libpng-dev libsqlite3-dev"
# Tests run optimised (numeric code is 10-50x slower in debug) in their own build folder.
test_flags := "-c release -Xswiftc -enable-testing --scratch-path .build-test"

default:
    @just --list

# Install the Debian packages KoalaBooth links against (only those missing).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=$(for p in {{apt_packages}}; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
        echo "installing: $missing"
        sudo=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
    fi

# Release build of the koalabooth program.
build: setup
    swift build -c release --product koalabooth
    @echo "built: $(swift build -c release --show-bin-path)/koalabooth"

# The whole test suite, optimised.
test: setup
    swift build {{test_flags}} --build-tests
    swift test {{test_flags}} --skip-build --disable-swift-testing
    just test-webui

# The web UI in headless Chromium (Debian's chromium + chromium-driver; selenium in a venv) against `serve` on the tiny model; `screenshots=docs/screenshots` keeps the pictures.
test-webui screenshots="":
    #!/usr/bin/env bash
    set -euo pipefail
    missing=$(for p in chromium chromium-driver; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
        echo "installing: $missing"
        sudo=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
    fi
    venv="${KB_TOOLS_VENV:-$HOME/.cache/koalabooth-tools-venv}"
    if ! "$venv/bin/python" -c "import selenium" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q -r tools/webui/requirements.txt
    fi
    swift build {{test_flags}} --product koalabooth
    timeout 240 "$venv/bin/python" tools/webui/webui_test.py --bin "$(swift build {{test_flags}} --show-bin-path)/koalabooth" --screenshots "{{screenshots}}"

# Retake the web UI screenshots in docs/screenshots.
screenshots: (test-webui "docs/screenshots")

# End-to-end demo on the built-in tiny model (random weights, not a real KOALA).
demo: build
    #!/usr/bin/env bash
    set -euo pipefail
    bin="$(swift build -c release --show-bin-path)/koalabooth"
    export KOALABOOTH_HOME="$PWD/.koalabooth-demo"
    model=models/tiny
    echo "== 1. a tiny SDXL-architecture model with RANDOM weights (stands in for KOALA-700M; draws noise)"
    mkdir -p models
    [ -f "$model/model_index.json" ] || "$bin" model init --preset tiny --out "$model" --seed 0
    "$bin" model info "$model"
    echo "== 2. a subject from the example photos in subjects/robot-toy"
    "$bin" subject show robot-toy >/dev/null 2>&1 || "$bin" subject create robot-toy --class toy --token sks subjects/robot-toy/*.jpg
    "$bin" subject list
    echo "== 3. DreamBooth LoRA training with recipes/tiny.toml"
    "$bin" train robot-toy --recipe recipes/tiny.toml --model "$model"
    echo "== 4. two images of the trained subject (DPM-Solver++, 10 steps)"
    mkdir -p out
    "$bin" generate --subject robot-toy --prompt "a photo of {token} {class} on the beach" --steps 10 --count 2 --seed 1 --output out/demo.png
    "$bin" subject show robot-toy
    echo
    echo "model:      $model"
    echo "data dir:   $KOALABOOTH_HOME (subjects, photos, runs, LoRA checkpoints, database)"
    echo "images:     out/demo-1.png out/demo-2.png (noise: the tiny model's weights are random)"

# Issue 19's experiment: distil the tiny SDXL-structured random teacher into a KOALA-700M-structured student on captioned images the teacher drew, both feature modes, by the teacher alone (task weight 0); prints the held-out output gap.
distill-experiment steps="2000" lr="1e-4": build
    #!/usr/bin/env bash
    set -euo pipefail
    bin="$(swift build -c release --show-bin-path)/koalabooth"
    work=.koalabooth-distill-experiment
    teacher=models/tiny-sdxl
    mkdir -p models "$work"
    [ -f "$teacher/model_index.json" ] || "$bin" model init --preset tiny-sdxl --out "$teacher" --seed 0
    [ -f models/tiny/model_index.json ] || "$bin" model init --preset tiny --out models/tiny --seed 0
    if [ ! -f "$work/data/metadata.jsonl" ]; then
        mkdir -p "$work/data"
        : > "$work/data/metadata.jsonl.partial"
        n=0
        for thing in dog cat robot mug car tree house bird boat lamp chair clock; do
            for place in "on a beach" "in a forest"; do
                prompt="a photo of a $thing $place"
                "$bin" generate --model "$teacher" --prompt "$prompt" --steps 4 --width 64 --height 64 --seed "$n" \
                    --output "$work/data/$n.png" >/dev/null 2>>"$work/generate.log"
                printf '{"file_name": "%s.png", "text": "%s"}\n' "$n" "$prompt" >> "$work/data/metadata.jsonl.partial"
                n=$((n + 1))
            done
        done
        mv "$work/data/metadata.jsonl.partial" "$work/data/metadata.jsonl"
    fi
    for mode in self-attention last-feature; do
        sed -e "s/^max_steps = .*/max_steps = {{steps}}/" -e "s/^every = .*/every = 500/" -e "s/^features = .*/features = \"$mode\"/" \
            -e "s/^learning_rate = .*/learning_rate = {{lr}}/" recipes/tiny-distill.toml > "$work/$mode.toml"
        # A random teacher is no denoiser: the task term would pull the student to the true
        # noise and away from the teacher, so this run distils by the teacher alone.
        echo "task_weight = 0.0" >> "$work/$mode.toml"
        rm -rf "$work/out-$mode" "$work/out-$mode.run"
        echo "== $mode, {{steps}} steps at learning rate {{lr}} (CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
        "$bin" distill --teacher "$teacher" --student models/tiny/unet/config.json --data "$work/data" --recipe "$work/$mode.toml" \
            --out "$work/out-$mode" --holdout 6 | grep -E "^(teacher|relative|distilled)|^step (1|[0-9]*[05]00)/"
    done

# Schema-driven fuzzing of the HTTP API (schemathesis, in .venv-fuzz-api/) against a live `serve` on 127.0.0.1 with the tiny model: EXAMPLES per operation within SECONDS; fails on any 5xx, schema break or server crash.
fuzz-api examples="100" seconds="240": build
    tools/fuzz-api/fuzz.sh "$(swift build -c release --show-bin-path)/koalabooth" {{examples}} {{seconds}}

# Load test of the HTTP API: READS concurrent reads and UPLOADS concurrent subject uploads against a live `serve` on 127.0.0.1 while a training runs; checks no errors, every upload whole, `doctor` clean; prints read latency p50/p90/p99.
load-api reads="200" uploads="20": build
    python3 tools/load-api/load.py "$(swift build -c release --show-bin-path)/koalabooth" {{reads}} {{uploads}}

# Benchmarks (release build) beside PyTorch in the same run: no args = kernels + tiny generate; `unet`, `koala`, `all` or a name filter; `--json`.
bench *args: setup
    swift build -c release --product KoalaBench
    "$(swift build -c release --show-bin-path)/KoalaBench" {{args}}

# Full-size check (not in CI): diffusers writes a random KOALA-700M U-Net, KoalaBooth loads it and compares one 256x256 forward.
verify-full dir="/tmp/koalabooth-verify-full": setup
    #!/usr/bin/env bash
    set -euo pipefail
    venv="${KB_REFENV:-$HOME/.cache/koalabooth-refenv}"
    [ -f "{{dir}}/io.safetensors" ] || "$venv/bin/python" tools/reference/verify_full.py "{{dir}}"
    swift build {{test_flags}} --build-tests
    KB_VERIFY_FULL_DIR="{{dir}}" swift test {{test_flags}} --skip-build --disable-swift-testing --filter VerifyFullTests

# Regenerate the parity fixtures in Tests/Fixtures with the pinned reference libraries.
fixtures:
    #!/usr/bin/env bash
    set -euo pipefail
    venv="${KB_REFENV:-$HOME/.cache/koalabooth-refenv}"
    if ! "$venv/bin/python" -c "import torch, diffusers, transformers, bitsandbytes, peft" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q -r tools/reference/requirements.txt
    fi
    "$venv/bin/python" tools/reference/make_fixtures.py
