#!/usr/bin/env bash
# One sitting of the CPU speed rows of docs/benchmarks.md (issue 14): our training step
# (bf16 default and --f32) against PyTorch at 96/48 and 224/96, the ResNet-18 step, and
# embedding against timm, alternated, two rounds, each run after 5 s of rest (a process that
# exits holding gigabytes slows the next one for a few seconds).
#
#   bash benches/cpu-sitting.sh BIN PYTHON OUT
#     BIN     the dino-curate binary (copy it first if you keep building)
#     PYTHON  a venv's python with torch, timm and torchvision
#     OUT     file the lines are appended to ("HH:MM:SS row :: JSON")
#
# Run from the project root with ../shared beside it. ~6 minutes on the 2-core machine.
set -u
BIN=$1 PY=$2 OUT=$3
run() {
  local label=$1
  shift
  sleep 5
  local result
  result=$("$@" 2>/dev/null | tail -1)
  echo "$(date +%H:%M:%S) $label :: $result" | tee -a "$OUT"
}
echo "# sitting $(date -u) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
for size in "96 48" "224 96"; do
  set -- $size
  for round in 1 2; do
    run "vit$1 ours-bf16 (round $round)" "$BIN" bench train --global-size "$1" --local-size "$2" --json
    run "vit$1 ours-f32 (round $round)" "$BIN" --f32 bench train --global-size "$1" --local-size "$2" --json
    run "vit$1 torch (round $round)" "$PY" ../shared/tools/torch_dino_step.py --global-size "$1" --local-size "$2"
  done
done
for round in 1 2; do
  run "resnet18 ours (round $round)" "$BIN" bench train --arch resnet18 --global-size 96 --local-size 48 --json
  run "resnet18 torch (round $round)" "$PY" benches/torch_resnet_step.py --arch resnet18 \
    --global-size 96 --local-size 48 --batch 8 --threads 2
done
for round in 1 2; do
  run "embed vit-s224 ours-bf16 (round $round)" "$BIN" bench embed --json
  run "embed vit-s224 ours-f32 (round $round)" "$BIN" --f32 bench embed --json
  run "embed vit-s224 timm-f32 (round $round)" "$PY" benches/torch_embed.py vit_small_patch16_224 224 32 f32
  run "embed vit-t96 ours-bf16 (round $round)" "$BIN" bench embed --arch vit-tiny --size 96 \
    --batch-size 64 --batches 7 --json
  run "embed vit-t96 timm-f32 (round $round)" "$PY" benches/torch_embed.py vit_tiny_patch16_224 96 64 f32
done
echo "# end $(date -u) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
