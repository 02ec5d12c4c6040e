//! Recall of `Store::search` against exact answers on the benchmark's vectors, in the process
//! that built the graph and after reopening (dump reload). Diagnostics for choosing defaults.
//!
//! cargo run --release -p dino-curate-index --example store_recall -- N EF_CONSTRUCTION [DIR]
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use dino_curate_index::{AnnParams, SearchOptions, Store};

const DIM: usize = 384;

fn read(path: &std::path::Path, rows: usize) -> std::io::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(4 * DIM)
        .take(rows)
        .map(|r| {
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect())
}

fn curve(
    s: &mut Store,
    queries: &[Vec<f32>],
    truth: &[Vec<usize>],
    ids: &[u64],
) -> Result<String, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for ef in [16, 24, 32, 48, 64, 96, 128] {
        s.set_options(SearchOptions {
            ef_search: ef,
            ..s.options()
        });
        let t = Instant::now();
        let mut r = 0.0;
        for (q, tr) in queries.iter().zip(truth) {
            let want: Vec<usize> = tr.iter().map(|i| ids[*i] as usize).collect();
            let got: Vec<usize> = s.search(q, 10)?.into_iter().map(|x| x.0 as usize).collect();
            r += common::recall(&want, &got);
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / queries.len() as f64;
        out.push(format!(
            "ef {ef}: {:.4} ({us:.0} µs)",
            r / queries.len() as f64
        ));
    }
    Ok(out.join(", "))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30_000);
    let efc: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/dino-ann-bench".into()));
    let base = read(&dir.join("base.f32"), n)?;
    let queries = read(&dir.join("queries.f32"), 300)?;
    let truth: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| common::exact_topk(&base, q, 10))
        .collect();
    let tmp = tempfile::tempdir()?;
    let mut s = Store::open(tmp.path())?;
    s.set_model("x", DIM)?;
    s.set_options(SearchOptions {
        params: AnnParams {
            ef_construction: efc,
            ..AnnParams::default()
        },
        ..s.options()
    });
    let ids: Vec<u64> = base
        .iter()
        .enumerate()
        .map(|(i, v)| s.put(&common::record(&format!("/{i}"), i as u64), v))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    s.sync_ann()?;
    println!(
        "n {n} efc {efc}: built and dumped in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("  built:    {}", curve(&mut s, &queries, &truth, &ids)?);
    drop(s);
    let mut s = Store::open(tmp.path())?;
    println!("  reloaded: {}", curve(&mut s, &queries, &truth, &ids)?);
    Ok(())
}
