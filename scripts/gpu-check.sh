#!/usr/bin/env bash
# GPU check, run on a lent GPU host through the device tool (no Rust toolchain there):
#   build here:  eval "$(bash ../shared/tools/cuda-env.sh "$HOME/.cache/cuda13")"
#                CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda
#   run there:   carry ["target-cuda/release/dino-curate"], command: bash scripts/gpu-check.sh
# Writes JSON results to $OUT (or ./gpu-check-out) and prints a summary.
set -uo pipefail
BIN=${BIN:-target-cuda/release/dino-curate}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"

# The CUDA build links libcublas/libcurand/libcudart dynamically: find them in the host's
# Python NVIDIA packages (the driver provides libcuda.so.1).
for l in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13; do
  f=$(find / -name "$l*" -path '*nvidia*' 2>/dev/null | head -1)
  [ -n "$f" ] && LD_LIBRARY_PATH=$(dirname "$f"):${LD_LIBRARY_PATH:-}
done
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
ldd "$BIN" | grep -E "cuda|cublas|curand" | tee "$OUT/ldd.txt"

run() {
  local name=$1; shift
  echo "== $name: $*"
  timeout 240 "$BIN" "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "rc=$? $(cat "$OUT/$name.json")"
  tail -3 "$OUT/$name.log"
}

run bench_cuda_96_48 bench train --device cuda --global-size 96 --local-size 48 --batch-size 32
run bench_cuda_224_96_small bench train --device cuda --arch vit-small --global-size 224 --local-size 96 --batch-size 32 --out-dim 65536
run bench_cpu_96_48 bench train --device cpu --global-size 96 --local-size 48 --steps 3 --warmup 1
