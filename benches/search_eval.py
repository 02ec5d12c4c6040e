#!/usr/bin/env python3
"""Recall@k of `dino-curate search` for an original's edited copies, on a near-duplicate
benchmark made by ../shared/tools/make_neardup_bench.py (its manifest.csv says which file is
the original of each group and which edits each copy has).

usage: search_eval.py BINARY WORKSPACE BENCH_DIR [K]
Each group's original is the query (`search ORIGINAL -k K+1 --json`); the query's own file is
dropped from the results (older binaries list it first), the first K left are scored.
Extra `search` arguments come from the environment variable SEARCH_ARGS; QUERIES=N scores
the first N groups only.
Prints one JSON line: recall@K over all copies, per edit, queries, seconds per query.
The workspace must hold an index of BENCH_DIR/images.
"""
import collections
import csv
import json
import os
import subprocess
import sys
import time


def main():
    binary, workspace, bench = sys.argv[1:4]
    k = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    rows = list(csv.DictReader(open(os.path.join(bench, "manifest.csv"))))
    originals = {r["group"]: r["name"] for r in rows if r["role"] == "original"}
    copies = collections.defaultdict(list)
    for r in rows:
        if r["role"] == "variant":
            copies[r["group"]].append(r)
    found, total = collections.Counter(), collections.Counter()
    started = time.time()
    queries = sorted(originals.items())[:int(os.environ.get("QUERIES", len(originals)))]
    for group, name in queries:
        out = subprocess.run(
            [binary, "--workspace", workspace, "search", os.path.join(bench, "images", name),
             "-k", str(k + 1), "--json"] + os.environ.get("SEARCH_ARGS", "").split(),
            check=True, capture_output=True, text=True,
        ).stdout
        listed = [os.path.basename(h["path"]) for h in json.loads(out)]
        listed = [n for n in listed if n != name][:k]
        for copy in copies[group]:
            edits = {e.split("_")[0] for e in copy["edits"].split(";") if e}
            hit = copy["name"] in listed
            for key in ["all"] + sorted(edits):
                total[key] += 1
                found[key] += hit
    print(json.dumps({
        "k": k,
        "recall": round(found["all"] / max(total["all"], 1), 4),
        "copies": total["all"],
        "queries": len(queries),
        "seconds_per_query": round((time.time() - started) / max(len(queries), 1), 2),
        "per_edit": {e: round(found[e] / total[e], 3) for e in sorted(total) if e != "all"},
    }), flush=True)


if __name__ == "__main__":
    main()
