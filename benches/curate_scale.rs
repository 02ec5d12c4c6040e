//! Curation at scale: `dups` and `clusters` over an already built index of synthetic
//! clustered unit vectors (1M × 384 by default), with time and peak memory per step.
//!
//! Two runs, so that the memory of building the index does not count:
//!   cargo bench --bench curate_scale -- --build [--n 1000000] [--dir /tmp/dino-scale]
//!   cargo bench --bench curate_scale -- [--dir /tmp/dino-scale] [--k 200] [--search]
//!   cargo bench --bench curate_scale -- [--dir /tmp/dino-scale] --queries 200
//! `dups` reads each photo's neighbours from the graph's links (`--search`: searches the
//! graph once per photo, as `dups` did before session 8); `--k 0` skips `clusters`.
//! `--queries N` runs `search` instead, N stored vectors as queries. Memory is measured with
//! the binary's allocator (mimalloc), over the vectors' own size.
//! Building puts every vector into the store and builds the HNSW graph (the index's cost,
//! measured by index/benches/ann.rs); 1 % of the photos get a near copy (the vector plus
//! noise, similarity ≈ 0.995) so that `dups` has groups to find, and their count is checked.
//! Prints one JSON line per run.

#[path = "../index/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use dino_curate::curate::clusters::default_k;
use dino_curate::curate::collection::Collection;
use dino_curate::curate::dups::DupRule;
use dino_curate::curate::keeper::KeepRule;
use dino_curate_index::{PhotoRecord, Store};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The allocator of the `dino-curate` binary, so that memory is measured as the CLI uses it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DIM: usize = 384;
const GRAPH_K: usize = 10;
const THRESHOLD: f32 = 0.99;
/// One photo in this many gets a near copy.
const COPY_EVERY: usize = 100;

struct Args {
    n: usize,
    dir: PathBuf,
    build: bool,
    k: Option<usize>,
    search: bool,
    queries: usize,
}

fn args() -> Args {
    let mut a = Args {
        n: 1_000_000,
        dir: PathBuf::from("/tmp/dino-scale"),
        build: false,
        k: None,
        search: false,
        queries: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--n" => a.n = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.n),
            "--dir" => a.dir = it.next().map(PathBuf::from).unwrap_or(a.dir),
            "--build" => a.build = true,
            "--search" => a.search = true,
            "--queries" => a.queries = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--k" => a.k = it.next().and_then(|v| v.parse().ok()),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// The process's private (anonymous) resident memory, in bytes: what it holds beyond
/// file pages the kernel can drop and read again (the graph's memory-mapped vectors).
fn anonymous_memory() -> u64 {
    status_field("RssAnon:")
}

/// A memory field of /proc/self/status (`VmRSS:`, …) in bytes, 0 when unreadable.
fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `--queries N`: `search` as the CLI runs it (the graph loaded from its dump), for N
/// stored vectors as queries, k = 20; reports the time to the first answer, the median
/// query after it, and the memory over the vectors.
fn search(a: &Args) {
    let mut store = Store::open(&a.dir).expect("open the store (run with --build first)");
    let (rss0, _) = memory();
    let anon0 = anonymous_memory();
    let n = store.meta().expect("meta").embeddings;
    let queries: Vec<Vec<f32>> = (0..a.queries)
        .filter_map(|i| store.embedding((i * 7919 % n) as u64 + 1).ok().flatten())
        .collect();
    let mut times = Vec::new();
    let mut found = 0;
    for q in &queries {
        let t = Instant::now();
        found += store.search(q, 20).expect("search").len();
        times.push(t.elapsed().as_secs_f64());
    }
    let first = times.first().copied().unwrap_or(0.0);
    let mut rest = times[1.min(times.len())..].to_vec();
    rest.sort_by(f64::total_cmp);
    let median_ms = rest.get(rest.len() / 2).copied().unwrap_or(0.0) * 1e3;
    let (rss, hwm) = memory();
    let vector_bytes = (n * DIM * 4) as f64;
    println!(
        "{{\"step\":\"search\",\"n\":{n},\"queries\":{},\"results\":{found},\"first_s\":{first:.1},\
         \"median_ms\":{median_ms:.2},\"peak_over_vectors\":{:.2},\"rss_over_vectors\":{:.2},\
         \"anonymous_over_vectors\":{:.2}}}",
        queries.len(),
        (hwm - rss0) as f64 / vector_bytes,
        (rss - rss0) as f64 / vector_bytes,
        (anonymous_memory() - anon0) as f64 / vector_bytes,
    );
}

/// `(VmRSS, VmHWM)` of this process in bytes.
fn memory() -> (u64, u64) {
    (status_field("VmRSS:"), status_field("VmHWM:"))
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so that each phase's peak is its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn record(i: usize, copy: bool) -> PhotoRecord {
    let mut blake3 = [0u8; 32];
    blake3[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PhotoRecord {
        path: PathBuf::from(format!(
            "/photos/{:03}/{i:07}{}.jpg",
            i % 1000,
            if copy { "-copy" } else { "" }
        )),
        size: 2_000_000 + i as u64,
        mtime_ns: i as i128,
        blake3,
        width: 4000,
        height: 3000,
        taken_at: None,
        stats: None,
        perceptual_hash: None,
        padding: None,
    }
}

fn near_copy(v: &[f32], rng: &mut StdRng) -> Vec<f32> {
    let mut c: Vec<f32> = v
        .iter()
        .map(|x| {
            let noise: f32 = StandardNormal.sample(rng);
            x + 0.004 * noise
        })
        .collect();
    common::normalise(&mut c);
    c
}

fn build(a: &Args) {
    let _ = std::fs::remove_dir_all(&a.dir);
    let originals = a.n - a.n / (COPY_EVERY + 1);
    let t = Instant::now();
    let base = common::clustered(originals, DIM, 500, 7);
    let mut rng = StdRng::seed_from_u64(11);
    let store = Store::open(&a.dir).expect("open the store");
    store
        .set_model("scale-bench", DIM)
        .expect("declare the model");
    let mut i = 0;
    for (k, v) in base.iter().enumerate() {
        if i == a.n {
            break;
        }
        store.put(&record(i, false), v).expect("put");
        i += 1;
        if k % COPY_EVERY == 0 && i < a.n {
            store
                .put(&record(i, true), &near_copy(v, &mut rng))
                .expect("put");
            i += 1;
        }
    }
    store.flush().expect("flush");
    let put_s = t.elapsed().as_secs_f64();
    drop(base);
    let mut store = store;
    let t = Instant::now();
    store.sync_ann().expect("build the graph");
    println!(
        "{{\"step\":\"build\",\"n\":{i},\"dim\":{DIM},\"generate_and_put_s\":{put_s:.1},\"sync_ann_s\":{:.1}}}",
        t.elapsed().as_secs_f64()
    );
}

fn curate(a: &Args) {
    let mut store = Store::open(&a.dir).expect("open the store (run with --build first)");
    let (rss0, _) = memory();
    let t = Instant::now();
    // as `dups`: the graph's own links, then the graph freed (--search: searched again)
    let knn = if a.search {
        store.knn_graph(GRAPH_K)
    } else {
        store.linked_graph(GRAPH_K)
    }
    .expect("k-NN graph");
    let (_, knn_peak) = memory();
    store.release_ann();
    let knn_s = t.elapsed().as_secs_f64();
    let (rss_released, _) = memory();
    reset_peak();
    let t = Instant::now();
    let collection = Collection::load(&store).expect("load");
    let load_s = t.elapsed().as_secs_f64();
    let (rss_loaded, _) = memory();
    let n = collection.vectors.len();
    let t = Instant::now();
    let groups = collection.duplicates(
        &knn,
        &DupRule::with_threshold(THRESHOLD),
        &KeepRule::Largest,
        None,
    );
    let group_s = t.elapsed().as_secs_f64();
    let (_, dups_peak) = memory();
    drop(knn);
    drop(store);
    let paired: usize = groups.iter().map(|g| g.members.len()).sum();
    let k = a.k.unwrap_or_else(|| default_k(n));
    let t = Instant::now();
    let clusters = if k == 0 {
        Vec::new()
    } else {
        collection.clusters(k, 1)
    };
    let clusters_s = t.elapsed().as_secs_f64();
    let (_, peak) = memory();
    let vector_bytes = (n * DIM * 4) as f64;
    println!(
        "{{\"step\":\"curate\",\"neighbours\":\"{}\",\"n\":{n},\"dim\":{DIM},\"knn_graph_s\":{knn_s:.1},\"load_s\":{load_s:.1},\
         \"group_s\":{group_s:.1},\"dups_total_s\":{:.1},\"groups\":{},\"copies_found\":{paired},\
         \"copies_planted\":{},\"dups_peak_over_vectors\":{:.2},\"knn_peak_over_vectors\":{:.2},\"after_release_over_vectors\":{:.2},\"loaded_over_vectors\":{:.2},\"clusters_k\":{k},\"clusters_s\":{clusters_s:.1},\
         \"clusters\":{},\"peak_over_vectors\":{:.2},\"rss_at_open_mb\":{}}}",
        if a.search { "searched" } else { "linked" },
        knn_s + load_s + group_s,
        groups.len(),
        collection
            .records
            .values()
            .filter(|r| r.path.to_string_lossy().ends_with("-copy.jpg"))
            .count(),
        (dups_peak.max(knn_peak) - rss0) as f64 / vector_bytes,
        (knn_peak - rss0) as f64 / vector_bytes,
        (rss_released - rss0) as f64 / vector_bytes,
        (rss_loaded - rss0) as f64 / vector_bytes,
        clusters.len(),
        (peak.max(knn_peak) - rss0) as f64 / vector_bytes,
        rss0 >> 20,
    );
}

fn main() {
    let a = args();
    if a.build {
        build(&a);
    } else if a.queries > 0 {
        search(&a);
    } else {
        curate(&a);
    }
}
