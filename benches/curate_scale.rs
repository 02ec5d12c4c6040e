//! Curation at scale: `dups` and `clusters` over an already built index of synthetic
//! clustered unit vectors (1M × 384 by default), with time and peak memory per step.
//!
//! Two runs, so that the memory of building the index does not count:
//!   cargo bench --bench curate_scale -- --build [--n 1000000] [--dir /tmp/dino-scale]
//!   cargo bench --bench curate_scale -- [--dir /tmp/dino-scale] [--k 200] [--search]
//! `dups` reads each photo's neighbours from the graph's links (`--search`: searches the
//! graph once per photo, as `dups` did before session 8).
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
}

fn args() -> Args {
    let mut a = Args {
        n: 1_000_000,
        dir: PathBuf::from("/tmp/dino-scale"),
        build: false,
        k: None,
        search: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--n" => a.n = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.n),
            "--dir" => a.dir = it.next().map(PathBuf::from).unwrap_or(a.dir),
            "--build" => a.build = true,
            "--search" => a.search = true,
            "--k" => a.k = it.next().and_then(|v| v.parse().ok()),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// `(VmRSS, VmHWM)` of this process in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
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
    store.release_ann();
    let knn_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let collection = Collection::load(&store).expect("load");
    let load_s = t.elapsed().as_secs_f64();
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
    let clusters = collection.clusters(k, 1);
    let clusters_s = t.elapsed().as_secs_f64();
    let (_, peak) = memory();
    let vector_bytes = (n * DIM * 4) as f64;
    println!(
        "{{\"step\":\"curate\",\"neighbours\":\"{}\",\"n\":{n},\"dim\":{DIM},\"knn_graph_s\":{knn_s:.1},\"load_s\":{load_s:.1},\
         \"group_s\":{group_s:.1},\"dups_total_s\":{:.1},\"groups\":{},\"copies_found\":{paired},\
         \"copies_planted\":{},\"dups_peak_over_vectors\":{:.2},\"clusters_k\":{k},\"clusters_s\":{clusters_s:.1},\
         \"clusters\":{},\"peak_over_vectors\":{:.2},\"rss_at_open_mb\":{}}}",
        if a.search { "searched" } else { "linked" },
        knn_s + load_s + group_s,
        groups.len(),
        collection
            .records
            .values()
            .filter(|r| r.path.to_string_lossy().ends_with("-copy.jpg"))
            .count(),
        (dups_peak - rss0) as f64 / vector_bytes,
        clusters.len(),
        (peak - rss0) as f64 / vector_bytes,
        rss0 >> 20,
    );
}

fn main() {
    let a = args();
    if a.build {
        build(&a);
    } else {
        curate(&a);
    }
}
