#!/usr/bin/env python3
"""Confusion table of `dino-curate dups` kinds on the real-burst set of benches/burst_bench.sh.

usage: burst_eval.py BINARY WORKSPACE BENCH
The workspace must hold an index of BENCH/images. Every pair of photos has a true relation
(shots of one burst, a copy and its original or two copies of one frame, the same scene at
moments more than 10 s apart, other scenes) and what `dups --json` made of it (in one group
of kind burst, in one group of kind copy, apart). Prints the table as Markdown and one JSON
line with the counts.
"""
import itertools
import json
import os
import subprocess
import sys
from collections import Counter

RELATIONS = ["same burst", "copy", "same scene, other moment", "other scene"]
OUTCOMES = ["burst", "copy", "apart"]


def relation(a, b, files):
    fa, fb = files[a], files[b]
    root = lambda n: files[n]["copy_of"] or n
    if fa["copy_of"] == b or fb["copy_of"] == a or (fa["copy_of"] and root(a) == root(b)):
        return "copy"
    if fa["burst"] is not None and fa["burst"] == fb["burst"]:
        return "same burst"
    if fa["scene"] == fb["scene"]:
        return "same scene, other moment"
    return "other scene"


def main():
    binary, workspace, bench = sys.argv[1:4]
    files = json.load(open(os.path.join(bench, "truth.json")))["files"]
    out = subprocess.run(
        [binary, "--workspace", workspace, "dups", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    kind_of = {}
    group_of = {}
    for g, group in enumerate(json.loads(out)):
        names = [os.path.basename(group["keep"])] + [
            os.path.basename(m["path"]) for m in group["members"]]
        for n in names:
            kind_of[n], group_of[n] = group["kind"], g
    table = Counter()
    for a, b in itertools.combinations(sorted(files), 2):
        together = a in group_of and group_of.get(a) == group_of.get(b)
        table[(relation(a, b, files), kind_of[a] if together else "apart")] += 1
    print("| pairs | " + " | ".join(f"grouped as {o}" if o != "apart" else o for o in OUTCOMES) + " |")
    print("|---|" + "---|" * len(OUTCOMES))
    for r in RELATIONS:
        print(f"| {r} | " + " | ".join(str(table[(r, o)]) for o in OUTCOMES) + " |")
    print(json.dumps({f"{r} / {o}": table[(r, o)] for r in RELATIONS for o in OUTCOMES}))


if __name__ == "__main__":
    main()
