//! Measures brute-force search cost from the store (to pick `exact_below`).
#[path = "../tests/common/mod.rs"]
mod common;
use dino_curate_index::{SearchOptions, Store};
use std::time::Instant;
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = common::clustered(20_100, 384, 300, 1);
    let dir = tempfile::tempdir()?;
    let mut s = Store::open(dir.path())?;
    s.set_model("x", 384)?;
    let mut n = 0;
    for target in [1000usize, 2000, 5000, 10000, 20000] {
        while n < target {
            s.put(&common::record(&format!("/{n}"), n as u64), &data[n])?;
            n += 1;
        }
        let t = Instant::now();
        for q in &data[20_000..20_020] {
            s.search_exact(q, 10)?;
        }
        let exact_ms = t.elapsed().as_secs_f64() * 1e3 / 20.0;
        let t = Instant::now();
        let g = {
            s.set_options(SearchOptions {
                exact_below: usize::MAX,
                ..s.options()
            });
            s.knn_graph(10)?
        };
        let knn_exact_s = t.elapsed().as_secs_f64();
        println!("n={target} search_exact {exact_ms:.2} ms  knn_graph exact {knn_exact_s:.2} s ({} rows)", g.len());
    }
    Ok(())
}
