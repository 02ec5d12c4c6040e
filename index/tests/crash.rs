//! kill -9 at arbitrary moments while a child process writes (puts, re-embeddings, moves,
//! removals, graph dumps), then check that the store is consistent and searches correctly.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{record, unit};
use dino_curate_index::{SearchOptions, Store};

type R = Result<(), Box<dyn std::error::Error>>;

const DIM: usize = 16;
const ENV: &str = "DINO_INDEX_CRASH_DIR";

fn open(dir: &Path) -> Result<Store, Box<dyn std::error::Error>> {
    let mut s = Store::open(dir)?;
    s.set_model("m", DIM)?;
    s.set_options(SearchOptions {
        exact_below: 0,
        ef_search: 200,
        ..s.options()
    });
    Ok(s)
}

/// Not a test on its own: the writer the crash test runs in a child process and kills.
#[test]
fn crash_child_writer() -> R {
    let Ok(dir) = std::env::var(ENV) else {
        return Ok(());
    };
    let mut s = open(Path::new(&dir))?;
    let mut i: u64 = s.meta()?.photos as u64 * 7919;
    loop {
        i += 1;
        let p = format!("/w/{}.jpg", i % 300);
        match i % 10 {
            0..=5 => drop(s.put(&record(&p, i % 50), &unit(DIM, i))?),
            6 => {
                if let Some((id, mut r)) = s.get_by_path(Path::new(&p))? {
                    r.path = format!("/w/{}.jpg", (i * 13) % 300).into();
                    s.relocate(id, &r)?;
                }
            }
            7 | 8 => {
                if let Some((id, _)) = s.get_by_path(Path::new(&p))? {
                    s.remove(id)?;
                }
            }
            _ => {
                if i % 40 == 9 {
                    s.sync_ann()?;
                } else {
                    s.flush()?;
                }
            }
        }
    }
}

fn check(dir: &Path) -> R {
    let mut s = open(dir)?;
    let photos: Vec<_> = s.photos().collect::<Result<_, _>>()?;
    let mut paths = HashSet::new();
    for (id, r) in &photos {
        assert!(paths.insert(r.path.clone()), "two records for {:?}", r.path);
        assert_eq!(s.get_by_path(&r.path)?.map(|x| x.0), Some(*id));
        assert!(s.ids_by_hash(&r.blake3)?.contains(id));
        assert!(s.embedding(*id)?.is_some(), "record without vector");
    }
    let ids: HashSet<u64> = photos.iter().map(|x| x.0).collect();
    let vectors: Vec<_> = s.embeddings().collect::<Result<_, _>>()?;
    assert!(
        vectors.iter().all(|(id, _)| ids.contains(id)),
        "vector without record"
    );
    let m = s.meta()?;
    assert_eq!((m.photos, m.embeddings), (photos.len(), vectors.len()));
    for q in 0..5 {
        let q = unit(DIM, 1_000_000 + q);
        assert_eq!(s.search(&q, 5)?, s.search_exact(&q, 5)?);
    }
    Ok(())
}

#[test]
fn kill_9_leaves_a_consistent_store() -> R {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, dir.path())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(400 + 150 * round));
        assert!(child.try_wait()?.is_none(), "the writer stopped by itself");
        child.kill()?; // SIGKILL
        child.wait()?;
        check(dir.path())?;
    }
    assert!(
        Store::open(dir.path())?.meta()?.photos > 0,
        "the writer wrote something"
    );
    Ok(())
}
