#!/usr/bin/env bash
# The paper's Table 7 ablations on the CPU preset: the full recipe and one piece changed at a
# time, each trained for the same number of steps on DIR/train, then scored with `eval knn`.
#
#   bash benches/ablations.sh BIN DATA OUT [EPOCHS]
#     BIN     the dino-curate binary (copy it first if you keep building)
#     DATA    a folder with train/<class>/ and test/<class>/ (../shared/data/imagenette-small)
#     OUT     one workspace per variant and results.jsonl are written here
#     EPOCHS  passes over DATA/train per variant (default 3; schedules span them)
#
# One line per variant lands in OUT/results.jsonl: name, flags, train summary, k-NN result.
set -euo pipefail
bin=$1 data=$2 out=$3 epochs=${4:-3}
mkdir -p "$out"
variants=(
  "full|"
  "no-momentum-teacher|--no-momentum-teacher"
  "no-multi-crop|--local-crops 0"
  "mse|--loss mse"
  "sinkhorn|--sinkhorn"
  "predictor|--predictor"
)
for entry in "${variants[@]}"; do
  name=${entry%%|*} flags=${entry#*|}
  ws=$out/$name
  if [[ -f $ws/knn.json ]]; then continue; fi
  rm -rf "$ws"
  start=$(date +%s)
  # shellcheck disable=SC2086  # flags are words on purpose
  "$bin" --workspace "$ws" train "$data/train" --from-scratch --preset cpu --epochs "$epochs" --seed 0 \
    $flags --json >"$ws.train.json" 2>"$ws.train.log"
  train_s=$(($(date +%s) - start))
  "$bin" --workspace "$ws" eval knn "$data" --json >"$ws/knn.json" 2>"$ws.knn.log"
  python3 - "$name" "$flags" "$train_s" "$ws.train.json" "$ws/knn.json" >>"$out/results.jsonl" <<'PY'
import json, sys
name, flags, train_s, train, knn = sys.argv[1:]
print(json.dumps({"name": name, "flags": flags, "train_s": int(train_s),
                  "train": json.load(open(train)), "knn": json.load(open(knn))}))
PY
  tail -1 "$out/results.jsonl"
done
