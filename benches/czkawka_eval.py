#!/usr/bin/env python3
"""Pairwise precision and recall of czkawka_cli's similar-image groups on a near-duplicate
benchmark made by ../shared/tools/make_neardup_bench.py, beside `benches/neardup_eval.py`
for `dino-curate dups`.

usage: czkawka_eval.py CZKAWKA_CLI BENCH_DIR [MAX_DIFFERENCE ...]
Extra czkawka arguments (e.g. `--geometric-invariance mirror-flip-rotate90`) come from the
environment variable CZKAWKA_ARGS. Prints one JSON line per max difference:
{max_difference, precision, recall, predicted_pairs, true_pairs, seconds}.
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time


def pairs(groups):
    out = set()
    for g in groups:
        out.update(itertools.combinations(sorted(set(g)), 2))
    return out


def main():
    binary, bench = sys.argv[1:3]
    differences = sys.argv[3:] or ["5"]
    truth = pairs(json.load(open(os.path.join(bench, "groups.json")))["groups"])
    images = os.path.abspath(os.path.join(bench, "images"))
    for diff in differences:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "groups.json")
            start = time.time()
            subprocess.run(
                [binary, "image", "-d", images, "-m", "1", "-s", diff, "-C", out, "-N", "-M", "-W", "-H"]
                + os.environ.get("CZKAWKA_ARGS", "").split(),
                check=True,
            )
            seconds = time.time() - start
            found = json.load(open(out)) if os.path.exists(out) else []
        groups = [[os.path.basename(m["path"]) for m in g] for g in found]
        predicted = pairs(groups)
        hit = len(predicted & truth)
        print(json.dumps({
            "max_difference": int(diff),
            "precision": round(hit / len(predicted), 4) if predicted else 1.0,
            "recall": round(hit / len(truth), 4),
            "predicted_pairs": len(predicted),
            "true_pairs": len(truth),
            "seconds": round(seconds, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
