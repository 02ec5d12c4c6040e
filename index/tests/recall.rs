//! Recall@10 of the graph on 20k "real-like" 384-d vectors (clustered, not uniform random),
//! through the whole store: put, build, dump, reload.

mod common;

use common::{clustered, exact_topk, recall, record};
use dino_curate_index::{SearchOptions, Store};

#[test]
fn recall_at_10_on_20k_clustered_vectors() -> Result<(), Box<dyn std::error::Error>> {
    const N: usize = 20_000;
    const Q: usize = 200;
    const DIM: usize = 384;
    let data = clustered(N + Q, DIM, 300, 7);
    let (base, queries) = data.split_at(N);
    let dir = tempfile::tempdir()?;
    let mut s = Store::open(dir.path())?;
    s.set_model("clustered", DIM)?;
    let ids = base
        .iter()
        .enumerate()
        .map(|(i, v)| s.put(&record(&format!("/p/{i}.jpg"), i as u64), v))
        .collect::<Result<Vec<_>, _>>()?;
    let t = std::time::Instant::now();
    s.sync_ann()?;
    eprintln!("built {N} points in {:.1} s", t.elapsed().as_secs_f64());
    drop(s);
    let mut s = Store::open(dir.path())?;
    assert!(s.options().exact_below < N);
    let mut total = 0.0;
    for q in queries {
        let truth: Vec<usize> = exact_topk(base, q, 10)
            .into_iter()
            .map(|i| ids[i] as usize)
            .collect();
        let got: Vec<usize> = s
            .search(q, 10)?
            .into_iter()
            .map(|(id, _)| id as usize)
            .collect();
        total += recall(&truth, &got);
    }
    let r = total / Q as f64;
    eprintln!("recall@10 = {r:.4} at ef_search {}", s.options().ef_search);
    assert!(r >= 0.99, "recall@10 {r}");
    assert_eq!((s.ann_status().loads, s.ann_status().rebuilds), (1, 0));
    let _ = SearchOptions::default();
    Ok(())
}
