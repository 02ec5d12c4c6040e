#!/usr/bin/env bash
# The released weights on labelled data, before and after a 30-minute adaptation (issue 25).
# Needs a network, curl, and python3 (with Pillow for the near-duplicate bench). The build
# machines reach none of these hosts, so its rows in docs/quality.md are still to be filled
# in by whoever has one.
#
#   bash benches/released.sh BIN OUT [MODEL] [ADAPT_TIME]
#     BIN         the dino-curate binary
#     OUT         work folder: datasets, workspace, results.jsonl
#     MODEL       a released model (default dino-vits16, what `index` uses)
#     ADAPT_TIME  the adaptation budget (default 30m)
#
# Sets (train/<class>/, test/<class>/):
#   - imagenette: ../shared/data/imagenette-small when present, else 300 train and 100 test
#     photos per class of fast.ai's imagenette2-160. A subset of ImageNet, so it flatters
#     the released weights.
#   - eurosat: Sentinel-2 RGB tiles of 10 land-use classes (not ImageNet-like at all), 200
#     train and 100 test per class of EuroSAT_RGB.zip.
# Steps: `eval knn` and `eval linear` of MODEL on both; `eval neardup` and `eval knn` at
# input sides 112, 160, 224 and 320 (what a faster, smaller input would cost); `train`
# adapting MODEL to the eurosat train photos (no labels used) for ADAPT_TIME; the same
# evaluations of the adapted model, and the run's own verdict. The URLs can be overridden (IMAGENETTE_URL, EUROSAT_URL,
# DINO_CURATE_DOWNLOAD_BASE) for mirrors and dry runs against a local server.
set -euo pipefail
bin=$(realpath "$1") out=$2 model=${3:-dino-vits16} budget=${4:-30m}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(realpath "$out")
IMAGENETTE_URL=${IMAGENETTE_URL:-https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz}
EUROSAT_URL=${EUROSAT_URL:-https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip}
export DINO_CURATE_MODELS=${DINO_CURATE_MODELS:-$out/models}

fetch() { # URL FILE: once, through a partial file
  [ -s "$2" ] && return 0
  curl -fL --retry 3 -o "$2.part" "$1"
  mv -f "$2.part" "$2"
}

# Picks TRAIN and TEST photos per class from an archive into DEST/train|test/<class>/.
split() {
  python3 - "$@" <<'PY'
import io, random, sys, tarfile, zipfile, pathlib
archive, dest, n_train, n_test, mode = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if zipfile.is_zipfile(archive):
    z = zipfile.ZipFile(archive)
    names = [n for n in z.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png", ".tif"))]
    read = lambda n: z.read(n)
else:
    t = tarfile.open(archive)
    members = {m.name: m for m in t.getmembers() if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png"))}
    names = list(members)
    read = lambda n: t.extractfile(members[n]).read()
by_class = {}
for n in names:
    parts = pathlib.PurePosixPath(n).parts
    if mode == "imagenette" and "train" not in parts and "val" not in parts:
        continue
    by_class.setdefault(parts[-2], []).append(n)
rng = random.Random(0)
for cls, files in sorted(by_class.items()):
    files.sort()
    rng.shuffle(files)
    for split, chosen in (("train", files[:n_train]), ("test", files[n_train:n_train + n_test])):
        d = dest / split / cls
        d.mkdir(parents=True, exist_ok=True)
        for n in chosen:
            (d / pathlib.PurePosixPath(n).name).write_bytes(read(n))
print(f"{dest}: {len(by_class)} classes")
PY
}

sets=()
if [ -d "$here/../../shared/data/imagenette-small" ]; then
  sets+=("imagenette=$(realpath "$here/../../shared/data/imagenette-small")")
else
  [ -d "$out/imagenette" ] || { fetch "$IMAGENETTE_URL" "$out/imagenette.tgz"; split "$out/imagenette.tgz" "$out/imagenette" 300 100 imagenette; }
  sets+=("imagenette=$out/imagenette")
fi
[ -d "$out/eurosat" ] || { fetch "$EUROSAT_URL" "$out/eurosat.zip"; split "$out/eurosat.zip" "$out/eurosat" 200 100 eurosat; }
sets+=("eurosat=$out/eurosat")

results=$out/results.jsonl
evaluate() { # NAME MODEL_ARGS...
  local name=$1; shift
  for s in "${sets[@]}"; do
    local set=${s%%=*} dir=${s#*=}
    for kind in knn linear; do
      "$bin" --workspace "$out/ws" eval "$kind" "$dir" "$@" --json >"$out/$name-$set-$kind.json" 2>"$out/$name-$set-$kind.log"
      python3 -c 'import json,sys; r=json.load(open(sys.argv[4])); print(json.dumps({"row": sys.argv[1], "set": sys.argv[2], "eval": sys.argv[3], "result": r}))' \
        "$name" "$set" "$kind" "$out/$name-$set-$kind.json" | tee -a "$results"
    done
  done
}

"$bin" models --json >"$out/models-before.json"
evaluate "$model" --model "$model"

# The default input of `index` (official resize 256 + centre crop 224) against the whole
# photo and DINO's copy-detection size, on a near-duplicate bench built from BSDS500 (when
# ../shared is there; the descriptor is the index's, CLS + GeM).
tools=$here/../../shared/tools bsds=$here/../../shared/data/photos/bsds500
if [ -f "$tools/make_neardup_bench.py" ] && [ -d "$bsds" ]; then
  [ -d "$out/neardup" ] || python3 "$tools/make_neardup_bench.py" --sources "$bsds/train" "$bsds/val" \
    --distractors "$bsds/test" --out "$out/neardup" --seed 1 >/dev/null
  for framing in crop whole; do
    for size in 112 160 224 320; do
      "$bin" eval neardup "$out/neardup" --model "$model" --descriptor cls-gem --framing "$framing" \
        --size "$size" --json >"$out/neardup-$framing-$size.json" 2>/dev/null
      python3 -c 'import json,sys; r=json.load(open(sys.argv[3])); print(json.dumps({"row": "neardup", "framing": sys.argv[1], "size": int(sys.argv[2]), "result": {k: v for k, v in r.items() if not isinstance(v, (list, dict))}}))' \
        "$framing" "$size" "$out/neardup-$framing-$size.json" | tee -a "$results"
    done
  done
fi
# What a smaller input side costs the features (issue 26): `index` at 160 or 112 px would
# embed 2–4× faster; k-NN on both sets at those sides, beside the 224 rows above.
for size in 112 160; do
  for s in "${sets[@]}"; do
    set=${s%%=*} dir=${s#*=}
    "$bin" --workspace "$out/ws" eval knn "$dir" --model "$model" --size "$size" --json \
      >"$out/size$size-$set-knn.json" 2>/dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[3])); print(json.dumps({"row": "input-side", "size": int(sys.argv[1]), "set": sys.argv[2], "result": r}))' \
      "$size" "$set" "$out/size$size-$set-knn.json" | tee -a "$results"
  done
done
"$bin" models --json >"$out/models.json"   # the file's size and SHA-256, recorded at download
"$bin" --workspace "$out/ws" train "$out/eurosat/train" --model "$model" --time "$budget" --json \
  >"$out/adapt.json" 2>"$out/adapt.log"
tail -3 "$out/adapt.log"
evaluate "$model-adapted-$budget" --model trained
python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print(json.dumps({"row": "verdict", "signal": t["signal"], "steps": t["steps"]}))' \
  "$out/adapt.json" | tee -a "$results"
