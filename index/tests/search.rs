//! Search against the brute-force oracle, tombstones, rebuilds and the dump cache.

mod common;

use std::path::Path;

use common::{clustered, exact_topk, recall, record};
use dino_curate_index::{PhotoId, SearchOptions, Store};

type R = Result<(), Box<dyn std::error::Error>>;

const DIM: usize = 32;

/// A store with `vectors` put at `/p/<i>.jpg`; returns the ids in order.
fn fill(
    dir: &Path,
    vectors: &[Vec<f32>],
    ann: bool,
) -> Result<(Store, Vec<PhotoId>), Box<dyn std::error::Error>> {
    let mut s = Store::open(dir)?;
    s.set_model("test", DIM)?;
    if ann {
        s.set_options(SearchOptions {
            exact_below: 0,
            ..s.options()
        });
    }
    let ids = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| s.put(&record(&format!("/p/{i}.jpg"), i as u64), v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((s, ids))
}

fn forced(s: &mut Store) -> Result<(), Box<dyn std::error::Error>> {
    s.set_options(SearchOptions {
        exact_below: 0,
        ..s.options()
    });
    Ok(())
}

/// Mean recall@k of `store.search` against the exact answer over the live `(id, vector)`s.
fn mean_recall(
    s: &mut Store,
    live: &[(PhotoId, Vec<f32>)],
    queries: &[Vec<f32>],
    k: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let base: Vec<Vec<f32>> = live.iter().map(|(_, v)| v.clone()).collect();
    let mut total = 0.0;
    for q in queries {
        let truth: Vec<usize> = exact_topk(&base, q, k)
            .into_iter()
            .map(|i| live[i].0 as usize)
            .collect();
        let got: Vec<usize> = s
            .search(q, k)?
            .into_iter()
            .map(|(id, _)| id as usize)
            .collect();
        total += recall(&truth, &got);
    }
    Ok(total / queries.len() as f64)
}

#[test]
fn exact_search_is_the_oracle() -> R {
    let dir = tempfile::tempdir()?;
    let data = clustered(600, DIM, 12, 1);
    let (mut s, ids) = fill(dir.path(), &data[..500], false)?;
    for q in &data[500..] {
        let truth: Vec<PhotoId> = exact_topk(&data[..500], q, 10)
            .into_iter()
            .map(|i| ids[i])
            .collect();
        let got = s.search_exact(q, 10)?;
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), truth);
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
        // Small collection: search() is exact too.
        assert_eq!(s.search(q, 10)?, got);
    }
    assert_eq!(s.search_exact(&data[0], 1000)?.len(), 500);
    assert_eq!(s.ann_status().rebuilds, 0, "no graph for small sets");
    Ok(())
}

#[test]
fn forced_ann_is_exact_on_small_sets() -> R {
    let dir = tempfile::tempdir()?;
    let data = clustered(260, DIM, 8, 2);
    let (mut s, _) = fill(dir.path(), &data[..200], true)?;
    s.set_options(SearchOptions {
        ef_search: 200,
        ..s.options()
    });
    for q in &data[200..] {
        let exact = s.search_exact(q, 10)?;
        let ann = s.search(q, 10)?;
        assert_eq!(
            ann.iter().map(|x| x.0).collect::<Vec<_>>(),
            exact.iter().map(|x| x.0).collect::<Vec<_>>()
        );
        for (a, e) in ann.iter().zip(&exact) {
            assert!((a.1 - e.1).abs() < 1e-5);
        }
    }
    assert_eq!(s.search(&data[0], 500)?.len(), 200);
    assert_eq!(s.ann_status().rebuilds, 1);
    Ok(())
}

#[test]
fn tombstones_are_never_returned_and_rebuild_past_threshold() -> R {
    let dir = tempfile::tempdir()?;
    let data = clustered(1300, DIM, 20, 3);
    let (mut s, ids) = fill(dir.path(), &data[..1000], true)?;
    s.sync_ann()?;
    let mut live: Vec<(PhotoId, Vec<f32>)> = ids
        .iter()
        .copied()
        .zip(data[..1000].iter().cloned())
        .collect();
    // 5% removed, 3% re-embedded (their old points die): below the 10% threshold.
    let removed: Vec<PhotoId> = ids.iter().copied().step_by(20).collect();
    for id in &removed {
        s.remove(*id)?;
    }
    for (j, i) in (1..1000).step_by(33).enumerate() {
        s.put(&record(&format!("/p/{i}.jpg"), i as u64), &data[1000 + j])?;
        if let Some(e) = live.iter_mut().find(|e| e.0 == ids[i]) {
            e.1 = data[1000 + j].clone();
        }
    }
    live.retain(|(id, _)| !removed.contains(id));
    // Query with the removed vectors themselves: their ids must not come back.
    for id in &removed {
        let idx = ids.iter().position(|x| x == id).unwrap_or(0);
        let res = s.search(&data[idx], 20)?;
        assert_eq!(res.len(), 20);
        assert!(
            res.iter().all(|(r, _)| !removed.contains(r)),
            "tombstone returned"
        );
    }
    let st = s.ann_status();
    assert_eq!(st.rebuilds, 1);
    assert!(st.points > st.live, "{st:?}");
    assert!(mean_recall(&mut s, &live, &data[1100..1300], 10)? >= 0.99);
    // Past 10% dead points: rebuilt without them.
    for id in ids.iter().skip(1).step_by(20) {
        s.remove(*id)?;
    }
    s.search(&data[0], 5)?;
    let st = s.ann_status();
    assert_eq!(st.rebuilds, 2, "{st:?}");
    assert_eq!(st.points, st.live);
    assert_eq!(st.live, s.meta()?.embeddings);
    Ok(())
}

#[test]
fn dump_is_reloaded_topped_up_or_rebuilt() -> R {
    let dir = tempfile::tempdir()?;
    let data = clustered(1200, DIM, 16, 4);
    let (mut s, mut ids) = fill(dir.path(), &data[..800], true)?;
    s.sync_ann()?;
    assert_eq!(s.ann_status().dumps, 1);
    drop(s);
    // Reopen: the dump is loaded, nothing rebuilt.
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    s.search(&data[0], 5)?;
    assert_eq!((s.ann_status().loads, s.ann_status().rebuilds), (1, 0));
    // Points added since the dump: loaded graph topped up, in this process and the next.
    for (i, v) in data.iter().enumerate().take(900).skip(800) {
        ids.push(s.put(&record(&format!("/p/{i}.jpg"), i as u64), v)?);
    }
    drop(s);
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    let live: Vec<_> = ids
        .iter()
        .copied()
        .zip(data[..900].iter().cloned())
        .collect();
    assert!(mean_recall(&mut s, &live, &data[1000..1100], 10)? >= 0.99);
    let st = s.ann_status();
    assert_eq!(
        (st.loads, st.top_ups, st.rebuilds, st.points),
        (1, 1, 0, 900),
        "{st:?}"
    );
    drop(s);
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    s.search(&data[0], 5)?;
    assert_eq!(
        (s.ann_status().loads, s.ann_status().top_ups),
        (1, 0),
        "re-dumped after top-up"
    );
    drop(s);

    // Damaged dumps: garbage of the same length, truncated, missing. Each is rebuilt.
    let files = || -> Vec<std::path::PathBuf> {
        let mut f: Vec<_> = std::fs::read_dir(dir.path().join("ann"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        f.sort();
        f
    };
    assert_eq!(
        files().len(),
        3,
        "graph, data and links of one dump; old dumps are deleted: {:?}",
        files()
    );
    type Damage<'a> = &'a dyn Fn(&Path) -> std::io::Result<()>;
    let damage: [Damage; 3] = [
        &|p| {
            let len = std::fs::metadata(p)?.len() as usize;
            std::fs::write(p, (0..len).map(|i| (i * 7 + 13) as u8).collect::<Vec<_>>())
        },
        &|p| {
            let bytes = std::fs::read(p)?;
            std::fs::write(p, &bytes[..bytes.len() / 2])
        },
        &|p| std::fs::remove_file(p),
    ];
    for (n, hurt) in damage.iter().enumerate() {
        for (j, f) in files().iter().enumerate() {
            if (n + j) % 2 == 0 || n == 0 {
                hurt(f)?;
            }
        }
        let mut s = Store::open(dir.path())?;
        forced(&mut s)?;
        assert!(mean_recall(&mut s, &live, &data[1000..1100], 10)? >= 0.99);
        let st = s.ann_status();
        assert_eq!((st.loads, st.rebuilds), (0, 1), "damage {n}: {st:?}");
    }
    Ok(())
}

#[test]
fn model_change_invalidates_the_graph() -> R {
    let dir = tempfile::tempdir()?;
    let data = clustered(300, DIM, 8, 5);
    let (mut s, ids) = fill(dir.path(), &data, true)?;
    s.sync_ann()?;
    assert!(s.set_model("other", DIM)?);
    assert!(s.search(&data[0], 5)?.is_empty());
    for (i, id) in ids.iter().enumerate().take(100) {
        let rec = s.get(*id)?.ok_or("record kept")?;
        s.put(&rec, &data[299 - i])?;
    }
    let res = s.search(&data[299], 1)?;
    assert_eq!(res.first().map(|r| r.0), Some(ids[0]));
    drop(s);
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    assert_eq!(s.search(&data[299], 1)?.first().map(|r| r.0), Some(ids[0]));
    assert_eq!(s.ann_status().loads, 1);
    Ok(())
}

/// 700 clustered vectors in a store (exact below the default size), the fourth removed.
fn clustered_store_with_a_removal(
) -> Result<(tempfile::TempDir, Store, Vec<PhotoId>), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let data = clustered(700, DIM, 10, 6);
    let (s, ids) = fill(dir.path(), &data, false)?;
    s.remove(ids[3])?;
    Ok((dir, s, ids))
}

#[test]
fn knn_graph_matches_the_exact_one() -> R {
    let (_dir, mut s, ids) = clustered_store_with_a_removal()?;
    let exact = s.knn_graph(8)?;
    assert_eq!(exact.len(), 699);
    assert!(exact
        .iter()
        .all(|(id, nb)| nb.len() == 8 && nb.iter().all(|(n, _)| n != id && *n != ids[3])));
    forced(&mut s)?;
    let ann = s.knn_graph(8)?;
    assert_eq!(
        ann.iter().map(|x| x.0).collect::<Vec<_>>(),
        exact.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    let mut total = 0.0;
    for ((_, a), (_, e)) in ann.iter().zip(&exact) {
        let a: Vec<usize> = a.iter().map(|x| x.0 as usize).collect();
        let e: Vec<usize> = e.iter().map(|x| x.0 as usize).collect();
        total += recall(&e, &a);
    }
    assert!(total / exact.len() as f64 >= 0.99);
    Ok(())
}

#[test]
fn linked_graph_holds_each_photos_nearest_and_no_dead_points() -> R {
    let (_dir, mut s, ids) = clustered_store_with_a_removal()?;
    let exact = s.knn_graph(8)?;
    assert_eq!(s.linked_graph(8)?, exact, "exact below exact_below");
    forced(&mut s)?;
    let linked = s.linked_graph(8)?;
    assert_eq!(
        linked.iter().map(|x| x.0).collect::<Vec<_>>(),
        exact.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    let mut nearest_found = 0;
    for ((id, got), (_, truth)) in linked.iter().zip(&exact) {
        assert!(got.len() <= 8 && !got.is_empty());
        assert!(got.iter().all(|(n, _)| n != id && *n != ids[3]), "{got:?}");
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        nearest_found += usize::from(got.iter().any(|(n, _)| *n == truth[0].0));
    }
    assert!(
        nearest_found * 100 >= linked.len() * 99,
        "{nearest_found} of {}",
        linked.len()
    );
    s.release_ann();
    assert_eq!(
        s.linked_graph(8)?,
        linked,
        "the links are read back from the dump's links file"
    );
    let st = s.ann_status();
    assert_eq!((st.link_reads, st.loads, st.points), (1, 0, 0), "{st:?}");
    Ok(())
}

#[test]
fn links_file_answers_like_the_graph_until_photos_are_added() -> R {
    let dir = tempfile::tempdir()?;
    let data = clustered(900, DIM, 12, 8);
    let (mut s, mut ids) = fill(dir.path(), &data[..800], true)?;
    s.sync_ann()?;
    let from_graph = s.linked_graph(6)?;
    assert_eq!(s.ann_status().link_reads, 0, "the graph in memory answers");
    drop(s);

    // A new process reads the file; the graph is not loaded.
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    assert_eq!(s.linked_graph(6)?, from_graph);
    // A removal is applied to the file's links like to the graph's.
    s.remove(ids[5])?;
    let from_file = s.linked_graph(6)?;
    let st = s.ann_status();
    assert_eq!((st.link_reads, st.loads, st.rebuilds), (2, 0, 0), "{st:?}");
    assert_eq!(from_file.len(), 799);
    assert!(from_file
        .iter()
        .all(|(id, nb)| *id != ids[5] && nb.iter().all(|(n, _)| *n != ids[5])));
    let from_graph = s.knn_graph(1).and_then(|_| s.linked_graph(6))?;
    assert_eq!(from_file, from_graph, "file and loaded graph agree");
    s.release_ann();

    // A photo embedded since the dump is not in the file: the graph is loaded and topped up.
    ids.push(s.put(&record("/p/800.jpg", 800), &data[800])?);
    let topped = s.linked_graph(6)?;
    assert!(topped.iter().any(|(id, _)| *id == ids[800]));
    assert_eq!(s.ann_status().link_reads, 2);
    drop(s);
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    assert_eq!(s.linked_graph(6)?, topped, "dumped again with its links");
    assert_eq!(s.ann_status().link_reads, 1);
    drop(s);

    // A missing links file (a store dumped before links files): read from the graph, and
    // written again for the next time.
    let links: Vec<_> = std::fs::read_dir(dir.path().join("ann"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".hnsw.links"))
        .collect();
    assert_eq!(links.len(), 1);
    std::fs::remove_file(&links[0])?;
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    assert_eq!(s.linked_graph(6)?, topped);
    assert_eq!((s.ann_status().link_reads, s.ann_status().loads), (0, 1));
    drop(s);
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    assert_eq!(s.linked_graph(6)?, topped);
    assert_eq!((s.ann_status().link_reads, s.ann_status().loads), (1, 0));
    drop(s);

    // A damaged file of the right length: refused, read from the graph, and written again.
    let mut bytes = std::fs::read(&links[0])?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&links[0], &bytes)?;
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    assert_eq!(s.linked_graph(6)?, topped);
    assert_eq!((s.ann_status().link_reads, s.ann_status().loads), (0, 1));
    drop(s);
    let mut s = Store::open(dir.path())?;
    forced(&mut s)?;
    assert_eq!(s.linked_graph(6)?, topped);
    assert_eq!((s.ann_status().link_reads, s.ann_status().loads), (1, 0));
    Ok(())
}
