#!/usr/bin/env python3
"""Pairwise precision and recall of `dino-curate dups` on a near-duplicate benchmark made by
../shared/tools/make_neardup_bench.py (its groups.json is the ground truth).

usage: neardup_eval.py BINARY WORKSPACE GROUPS_JSON [THRESHOLD ...]
Extra `dups` arguments (e.g. `--raw`) come from the environment variable DUPS_ARGS.
Prints one JSON line per threshold: {threshold, precision, recall, predicted_pairs, true_pairs}.
The workspace must hold an index of the benchmark's images/ folder.
"""
import itertools
import json
import os
import subprocess
import sys


def pairs(groups):
    out = set()
    for g in groups:
        for a, b in itertools.combinations(sorted(set(g)), 2):
            out.add((a, b))
    return out


def main():
    binary, workspace, groups_file = sys.argv[1:4]
    thresholds = [float(t) for t in sys.argv[4:]] or [0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96]
    truth = pairs(json.load(open(groups_file))["groups"])
    for t in thresholds:
        out = subprocess.run(
            [binary, "--workspace", workspace, "dups", "--json", "--threshold", str(t)]
            + os.environ.get("DUPS_ARGS", "").split(),
            check=True, capture_output=True, text=True,
        ).stdout
        groups = [[os.path.basename(g["keep"])] + [os.path.basename(m["path"]) for m in g["members"]]
                  for g in json.loads(out)]
        predicted = pairs(groups)
        hit = len(predicted & truth)
        print(json.dumps({
            "threshold": t,
            "precision": round(hit / len(predicted), 4) if predicted else 1.0,
            "recall": round(hit / len(truth), 4),
            "predicted_pairs": len(predicted),
            "true_pairs": len(truth),
        }), flush=True)


if __name__ == "__main__":
    main()
