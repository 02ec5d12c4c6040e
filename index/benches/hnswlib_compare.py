#!/usr/bin/env python3
"""hnswlib (C++) on the very vectors `cargo bench --bench ann` wrote, for a side-by-side.

    python3 -m venv /tmp/venv-hnsw && /tmp/venv-hnsw/bin/pip install hnswlib numpy
    /tmp/venv-hnsw/bin/python index/benches/hnswlib_compare.py [--dir /tmp/dino-ann-bench]
        [--dim 384] [--m 16] [--efc 200] [--threads 2]

Prints one JSON line in the shape of the Rust benchmark's.
"""
import argparse
import json
import os
import time

import hnswlib
import numpy as np

EFS = [10, 16, 24, 32, 48, 64, 96, 128, 200]
K = 10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/dino-ann-bench")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    base = np.fromfile(os.path.join(a.dir, "base.f32"), dtype="<f4").reshape(-1, a.dim)
    queries = np.fromfile(os.path.join(a.dir, "queries.f32"), dtype="<f4").reshape(-1, a.dim)
    truth = np.fromfile(os.path.join(a.dir, "truth.u32"), dtype="<u4").reshape(len(queries), K)

    index = hnswlib.Index(space="ip", dim=a.dim)
    index.init_index(max_elements=len(base), M=a.m, ef_construction=a.efc, random_seed=100)
    t, cpu = time.perf_counter(), time.process_time()
    index.add_items(base, np.arange(len(base)), num_threads=a.threads)
    build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - cpu

    index.set_num_threads(1)
    curve, chosen = [], None
    for ef in EFS:
        index.set_ef(ef)
        lat, cpu_lat, hits = [], [], 0
        for q, tr in zip(queries, truth):
            c, t = time.thread_time_ns(), time.perf_counter_ns()
            labels, _ = index.knn_query(q, k=K)
            lat.append((time.perf_counter_ns() - t) / 1e3)
            cpu_lat.append((time.thread_time_ns() - c) / 1e3)
            hits += len(set(labels[0].tolist()) & set(tr.tolist()))
        rec = hits / (K * len(queries))
        p50, cpu50 = float(np.median(lat)), float(np.median(cpu_lat))
        curve.append({"ef": ef, "recall": round(rec, 4), "p50_us": round(p50, 1), "cpu_p50_us": round(cpu50, 1)})
        if chosen is None and rec >= 0.99:
            chosen = (ef, rec, p50, cpu50)
    ef, rec, p50, cpu50 = chosen or (None, 0.0, 0.0, 0.0)
    print(json.dumps({
        "impl": "hnswlib", "n": len(base), "dim": a.dim, "m": a.m, "ef_construction": a.efc,
        "threads": a.threads, "build_s": round(build_s, 2), "build_cpu_s": round(build_cpu_s, 2),
        "inserts_per_s": round(len(base) / build_s), "inserts_per_cpu_s": round(len(base) / build_cpu_s),
        "ef_at_0.99": ef, "recall": round(rec, 4), "p50_us": round(p50, 1), "cpu_p50_us": round(cpu50, 1),
        "curve": curve,
    }))


if __name__ == "__main__":
    main()
