#!/usr/bin/env bash
# GPU check, run on a lent GPU host through the device tool (no Rust toolchain there; this
# script builds nothing). Build the binary here first, stripped so it travels (< 64 MiB):
#   eval "$(bash ../shared/tools/cuda-env.sh "$HOME/.cache/cuda13")"
#   CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
#     CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda
# then run with carry ["target-cuda/release/dino-curate"] and command `bash benches/gpu-check.sh`.
# Writes JSON and logs to $OUT (default ./gpu-check-out) and prints a table:
# model-only img/s, end-to-end img/s on phone-sized JPEGs, loader wait, and `index` photos/s
# with the share of time the model waited.
set -uo pipefail
BIN=${BIN:-target-cuda/release/dino-curate}
OUT=${OUT:-gpu-check-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-120}
mkdir -p "$OUT"

# The CUDA build links libcublas/libcurand/libcudart dynamically: find them in the host's
# Python NVIDIA packages (the driver provides libcuda.so.1).
for l in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13; do
  f=$(find / -name "$l*" -path '*nvidia*' 2>/dev/null | head -1)
  [ -n "$f" ] && LD_LIBRARY_PATH=$(dirname "$f"):${LD_LIBRARY_PATH:-}
done
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
ldd "$BIN" | grep -E "cuda|cublas|curand" > "$OUT/ldd.txt"

bench() {
  local name=$1; shift
  timeout 300 "$BIN" bench train --device cuda "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "rc=$? $name $(cat "$OUT/$name.json")" >&2
}
bench small_224_96_b64 --arch vit-small --global-size 224 --local-size 96 --local-crops 8 \
  --batch-size 64 --out-dim 65536 --steps 10 --warmup 3
bench small_224_96_b128 --arch vit-small --global-size 224 --local-size 96 --local-crops 8 \
  --batch-size 128 --out-dim 65536 --steps 10 --warmup 3

# End to end: phone-sized JPEGs made on the device, --preset gpu for TRAIN_SECONDS.
python3 - "$OUT/photos" <<'PY'
import random, sys, pathlib
from PIL import Image, ImageDraw
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
for i in range(256):
    w, h = rng.choice([(4000, 3000), (3000, 4000), (4032, 3024)])
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(40):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        d.ellipse([x0, y0, x0 + rng.randrange(50, 1500), y0 + rng.randrange(50, 1500)],
                  fill=tuple(rng.randrange(256) for _ in range(3)))
    img.save(out / f"p{i:03d}.jpg", quality=90)
PY
timeout $((TRAIN_SECONDS + 240)) "$BIN" --workspace "$OUT/ws" train "$OUT/photos" --from-scratch --preset gpu \
  --device cuda --batch-size 64 --epochs 100 --max-steps 100000 --checkpoint-every 100000 \
  --json >"$OUT/train.json" 2>"$OUT/train.log" &
pid=$!
sleep "$TRAIN_SECONDS"; kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null
metrics=$(ls "$OUT"/ws/models/*/metrics.jsonl 2>/dev/null | head -1)

# index on the GPU with the ViT-S/16 just trained (same cost as the released dino-vits16),
# decoding on every core; then the model alone at the same size and batch, to compare.
timeout 300 "$BIN" --workspace "$OUT/ws" index "$OUT/photos" --model trained --device cuda \
  --batch-size 64 --profile --json >"$OUT/index.json" 2>"$OUT/index.log"
echo "rc=$? index $(cat "$OUT/index.json")" >&2
timeout 120 "$BIN" bench embed --device cuda --batch-size 64 --json >"$OUT/embed.json" 2>"$OUT/embed.log"
echo "rc=$? embed $(cat "$OUT/embed.json")" >&2

python3 - "$OUT" "$metrics" <<'PY'
import json, sys, pathlib, statistics
out, metrics = pathlib.Path(sys.argv[1]), sys.argv[2]
print(f"| measurement | img/s | note |\n|---|---|---|")
for name in ["small_224_96_b64", "small_224_96_b128"]:
    try:
        r = json.loads((out / f"{name}.json").read_text())
        print(f"| model only, {name} | {r['img_per_s']:.1f} | median step {r['median_step_s']:.3f} s |")
    except Exception as e:
        print(f"| model only, {name} | - | failed: {e} |")
if metrics:
    rows = [json.loads(l) for l in open(metrics)][3:]
    if rows:
        e2e = statistics.median(r["img_per_s"] for r in rows)
        wait = statistics.median(r["data_wait_s"] for r in rows)
        print(f"| end to end, gpu preset, 12 MP JPEGs | {e2e:.1f} | median loader wait {wait*1e3:.0f} ms over {len(rows)} steps |")
else:
    print("| end to end | - | no metrics (see train.log) |")
try:
    p = json.loads((out / "index.json").read_text())["profile"]
    stages = {s["stage"]: s["ms_per_photo"] for s in p["stages"]}
    print(f"| index end to end, 12 MP JPEGs | {p['photos_per_s']:.1f} | model waited "
          f"{p['model_wait_share']*100:.0f} %; decode {stages.get('decode', 0):.0f} ms/photo (core time) |")
except Exception as e:
    print(f"| index end to end | - | failed: {e} (see index.log) |")
try:
    r = json.loads((out / "embed.json").read_text())
    print(f"| model only, embed 224 b64 | {r['img_per_s']:.1f} | |")
except Exception as e:
    print(f"| model only, embed | - | failed: {e} |")
PY
