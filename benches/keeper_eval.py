#!/usr/bin/env python3
"""Does `dups --keep RULE` keep the original? Scored on a near-duplicate benchmark made by
../shared/tools/make_neardup_bench.py (its manifest.csv says which file of each group is the
original and which edits each copy has).

usage: keeper_eval.py BINARY WORKSPACE BENCH_DIR [RULE]
Runs `dups --json --keep RULE` (default auto) on a workspace holding an index of
BENCH_DIR/images. Scores the dups groups that hold a benchmark original: how often the
keeper is that original, and, per edit, how often a copy with that edit was kept instead of
the original it is grouped with (`kept` of `present`: groups holding the original and such
a copy). Prints one JSON line.
"""
import collections
import csv
import json
import os
import subprocess
import sys


def edit_kinds(edits):
    """Edit names without their parameters: 'crop_area0.61_at3,4;jpeg_q70' -> {crop, jpeg}."""
    kinds = set()
    for e in filter(None, edits.split(";")):
        name = e.split("_")[0]
        kinds.add("letterbox" if name == "letterbox" else name)
    return kinds


def main():
    binary, workspace, bench = sys.argv[1:4]
    rule = sys.argv[4] if len(sys.argv) > 4 else "auto"
    rows = {r["name"]: r for r in csv.DictReader(open(os.path.join(bench, "manifest.csv")))}
    out = subprocess.run(
        [binary, "--workspace", workspace, "dups", "--json", "--keep", rule],
        check=True, capture_output=True, text=True,
    ).stdout
    groups = json.loads(out)
    scored = right = 0
    present, kept = collections.Counter(), collections.Counter()
    for g in groups:
        names = [os.path.basename(p) for p in [g["keep"]] + [m["path"] for m in g["members"]]]
        known = [rows[n] for n in names if n in rows]
        originals = {r["group"]: r["name"] for r in known if r["role"] == "original"}
        keeper = rows.get(names[0])
        if keeper is None or keeper["group"] not in originals:
            continue
        scored += 1
        right += keeper["role"] == "original"
        copies = [r for r in known if r["role"] == "variant" and r["group"] == keeper["group"]]
        for kind in set().union(*(edit_kinds(r["edits"]) for r in copies)) if copies else ():
            present[kind] += 1
        if keeper["role"] == "variant":
            for kind in edit_kinds(keeper["edits"]):
                kept[kind] += 1
    print(json.dumps({
        "rule": rule,
        "groups_with_original": scored,
        "original_kept": round(right / max(scored, 1), 3),
        "copy_kept_by_edit": {k: f"{kept[k]} of {present[k]}" for k in sorted(present)},
    }))


if __name__ == "__main__":
    main()
