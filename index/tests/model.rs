//! Random sequences of operations against a plain in-memory model (a BTreeMap), in the
//! spirit of sled's own tree-vs-BTreeMap tests, with reopenings in between.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{record, unit};
use dino_curate_index::{PhotoId, PhotoRecord, SearchOptions, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type R = Result<(), Box<dyn std::error::Error>>;

const DIM: usize = 16;
const PATHS: u64 = 24;

#[derive(Default)]
struct Model {
    /// id → (record, vector)
    photos: BTreeMap<PhotoId, (PhotoRecord, Vec<f32>)>,
}

impl Model {
    fn by_path(&self, path: &std::path::Path) -> Option<PhotoId> {
        self.photos
            .iter()
            .find(|(_, (r, _))| r.path == path)
            .map(|(id, _)| *id)
    }
}

fn path(i: u64) -> String {
    format!("/c/{i}.jpg")
}

fn open(dir: &std::path::Path) -> Result<Store, Box<dyn std::error::Error>> {
    let mut s = Store::open(dir)?;
    s.set_model("m", DIM)?;
    s.set_options(SearchOptions {
        exact_below: 0,
        ef_search: 64,
        ..s.options()
    });
    Ok(s)
}

fn check(s: &mut Store, m: &Model, rng: &mut StdRng) -> R {
    let got: Vec<(PhotoId, PhotoRecord)> = s.photos().collect::<Result<_, _>>()?;
    let want: Vec<(PhotoId, PhotoRecord)> = m
        .photos
        .iter()
        .map(|(id, (r, _))| (*id, r.clone()))
        .collect();
    assert_eq!(got, want);
    let got: Vec<(PhotoId, Vec<f32>)> = s.embeddings().collect::<Result<_, _>>()?;
    let want: Vec<(PhotoId, Vec<f32>)> = m
        .photos
        .iter()
        .map(|(id, (_, v))| (*id, v.clone()))
        .collect();
    assert_eq!(got, want);
    for i in 0..PATHS {
        let p = PathBuf::from(path(i));
        assert_eq!(s.get_by_path(&p)?.map(|x| x.0), m.by_path(&p), "{p:?}");
    }
    for (id, (r, _)) in &m.photos {
        assert!(s.ids_by_hash(&r.blake3)?.contains(id));
    }
    let meta = s.meta()?;
    assert_eq!(
        (meta.photos, meta.embeddings),
        (m.photos.len(), m.photos.len())
    );
    // Searching: only live ids, and (tiny set, wide ef) the exact answer.
    let q = unit(DIM, rng.random());
    let got: Vec<PhotoId> = s.search(&q, 5)?.into_iter().map(|x| x.0).collect();
    let exact: Vec<PhotoId> = s.search_exact(&q, 5)?.into_iter().map(|x| x.0).collect();
    assert!(got.iter().all(|id| m.photos.contains_key(id)));
    assert_eq!(got, exact);
    Ok(())
}

fn run(seed: u64, steps: usize) -> R {
    let dir = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = open(dir.path())?;
    let mut m = Model::default();
    for step in 0..steps {
        let live: Vec<PhotoId> = m.photos.keys().copied().collect();
        let pick = |rng: &mut StdRng| live.get(rng.random_range(0..live.len().max(1))).copied();
        match rng.random_range(0..100) {
            0..45 => {
                let p = path(rng.random_range(0..PATHS));
                let rec = record(&p, rng.random_range(0..8));
                let v = unit(DIM, rng.random());
                let id = s.put(&rec, &v)?;
                if let Some(old) = m.by_path(&rec.path) {
                    assert_eq!(old, id, "same path keeps its id");
                }
                m.photos.insert(id, (rec, v));
            }
            45..65 => {
                if let Some(id) = pick(&mut rng) {
                    s.remove(id)?;
                    m.photos.remove(&id);
                }
            }
            65..80 => {
                if let Some(id) = pick(&mut rng) {
                    let mut rec = m.photos[&id].0.clone();
                    rec.path = PathBuf::from(path(rng.random_range(0..PATHS)));
                    s.relocate(id, &rec)?;
                    if let Some(other) = m.by_path(&rec.path).filter(|o| *o != id) {
                        m.photos.remove(&other);
                    }
                    if let Some(e) = m.photos.get_mut(&id) {
                        e.0 = rec;
                    }
                }
            }
            80..92 => {
                if let Some(id) = pick(&mut rng) {
                    let mut rec = m.photos[&id].0.clone();
                    rec.mtime_ns += 1;
                    rec.width += 1;
                    s.update_record(id, &rec)?;
                    if let Some(e) = m.photos.get_mut(&id) {
                        e.0 = rec;
                    }
                }
            }
            92..96 => {
                s.sync_ann()?;
            }
            _ => {
                drop(s);
                s = open(dir.path())?;
            }
        }
        if step % 7 == 0 || step + 1 == steps {
            check(&mut s, &m, &mut rng)?;
        }
    }
    Ok(())
}

#[test]
fn store_behaves_like_the_model() -> R {
    for seed in 0..6 {
        run(seed, 250)?;
    }
    Ok(())
}
