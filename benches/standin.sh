#!/usr/bin/env bash
# Does adaptation keep what a good start knew, and does train's label-free verdict agree with
# the labels? (issue 25). No released file can be downloaded on the build machines, and every
# model trained there from scratch is near random quality, so the start is a stand-in that is
# actually good: a ResNet-18 trained with labels (benches/standin_supervised.py, not shipped).
#
#   bash benches/standin.sh BIN STANDIN.pth LABELLED PHOTOS OUT NAME TIME [train flags...]
#     BIN       the dino-curate binary (copy it first if you keep building)
#     STANDIN   the stand-in's torchvision state_dict
#     LABELLED  train/<class>/ and test/<class>/ (../shared/data/imagenette-small), for k-NN
#     PHOTOS    the unlabelled collection to adapt to (e.g. ../shared/data/photos/bsds500)
#     OUT/NAME  the row's workspace; its JSON line is appended to OUT/results.jsonl
#     TIME      the adaptation budget (e.g. 10m)
#     flags     the recipe (default: the adaptation recipe of `train --model`, at 96/48 px)
#
# The line holds k-NN before and after (labels), and the run's verdict with its measures
# (view agreement and RankMe on held-out photos, no labels).
set -euo pipefail
bin=$1 standin=$2 labelled=$3 photos=$4 out=$5 name=$6 budget=$7
shift 7
flags=("$@")
if [ ${#flags[@]} -eq 0 ]; then
  # `train --model`'s recipe (TrainConfig::adapt) on a ResNet-18 start at the stand-in's 96 px
  flags=(--lr 5e-5 --warmup-epochs 0 --momentum-teacher 0.9995 --freeze-last-layer 0
         --freeze-backbone 0.1 --local-crops 2 --batch-size 32)
fi
ws=$out/$name
mkdir -p "$out"
rm -rf "$ws"
mkdir -p "$ws"
"$bin" eval knn "$labelled" --weights "$standin" --size 96 --json >"$ws/knn-before.json" 2>"$ws/knn-before.log"
start=$(date +%s)
"$bin" --workspace "$ws" train "$photos" --init "$standin" --arch resnet18 --global-size 96 \
  --local-size 48 --time "$budget" "${flags[@]}" --json >"$ws/train.json" 2>"$ws/train.log"
train_s=$(($(date +%s) - start))
"$bin" --workspace "$ws" eval knn "$labelled" --model trained --size 96 --json \
  >"$ws/knn-after.json" 2>"$ws/knn-after.log"
python3 - "$name" "${flags[*]}" "$train_s" "$ws" >>"$out/results.jsonl" <<'PY'
import json, sys
name, flags, train_s, ws = sys.argv[1:]
load = lambda f: json.load(open(f"{ws}/{f}.json"))
train = load("train")
print(json.dumps({"name": name, "flags": flags, "train_s": int(train_s), "steps": train["steps"],
                  "knn_before": load("knn-before"), "knn_after": load("knn-after"),
                  "signal": train["signal"]}))
PY
tail -1 "$out/results.jsonl"
