#!/usr/bin/env bash
# One row of the recipe table (docs/quality.md): train on DATA/train with the given flags,
# then score the teacher with `eval knn` and `eval linear` on DATA.
#
#   bash benches/recipe.sh BIN DATA OUT NAME [train flags...]
#     BIN    the dino-curate binary (copy it first if you keep building)
#     DATA   a folder with train/<class>/ and test/<class>/ (../shared/data/imagenette-small)
#     OUT    the row's workspace is OUT/NAME; its line is appended to OUT/results.jsonl
#     NAME   the row's name
#     flags  e.g. --preset cpu --time 30m --seed 0
#
# The JSON line holds the flags, the train summary (steps, seconds), k-NN and linear top-1.
set -euo pipefail
bin=$1 data=$2 out=$3 name=$4
shift 4
ws=$out/$name
mkdir -p "$out"
rm -rf "$ws"
mkdir -p "$ws"
start=$(date +%s)
"$bin" --workspace "$ws" train "$data/train" --from-scratch "$@" --json >"$ws/train.json" 2>"$ws/train.log"
train_s=$(($(date +%s) - start))
"$bin" --workspace "$ws" eval knn "$data" --json >"$ws/knn.json" 2>"$ws/knn.log"
"$bin" --workspace "$ws" eval linear "$data" --json >"$ws/linear.json" 2>"$ws/linear.log"
python3 - "$name" "$*" "$train_s" "$ws" >>"$out/results.jsonl" <<'PY'
import json, sys
name, flags, train_s, ws = sys.argv[1:]
load = lambda f: json.load(open(f"{ws}/{f}.json"))
print(json.dumps({"name": name, "flags": flags, "train_s": int(train_s),
                  "train": load("train"), "knn": load("knn"), "linear": load("linear")}))
PY
tail -1 "$out/results.jsonl"
