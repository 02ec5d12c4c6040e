//! The store: sled trees as the source of truth, the HNSW graph as a cache over them.
//!
//! Trees (keys → values):
//! - `photos`: id (u64 BE) → record (bincode)
//! - `paths`: raw path bytes → id
//! - `hashes`: blake3 ‖ id → empty (one hash, many ids)
//! - `embeddings`: id → sequence number (u64 LE) ‖ vector (f32 LE)
//! - `ann_points`: sequence number (u64 BE) → id: the live points of the graph
//! - `failures`: raw path bytes → reason (UTF-8)
//! - `regions`: id → the photo's region queries (rows of the vector's width, f16, see
//!   `record::encode_regions`): parts of the photo that `dups` searches for, to find crops;
//!   written and dropped with the embedding
//! - `keypoints`: blake3 → the photo's verification keypoints (opaque bytes the binary
//!   writes; derived from the content, so a cache outside the transactions: a record
//!   without them is read again by the next `index`)
//! - `meta`: see [`keys`]
//!
//! Every write touching several trees is one sled transaction.

mod keypoints;
mod keys;
mod regions;
mod search;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;

use crate::ann::AnnParams;
use crate::record::{
    decode_embedding, decode_record, decode_u64_be, encode_record, id_key, path_from_key, path_key,
};
use crate::{IndexError, Meta, PhotoId, PhotoRecord};
use keys::{get_u64, SCHEMA_VERSION};
use search::AnnState;
pub use search::AnnStatus;

/// How searches are answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// Below this many embeddings, search and k-NN graphs are exact brute force and no graph
    /// is built.
    pub exact_below: usize,
    /// Candidate list size of HNSW queries (raised to k when smaller).
    pub ef_search: usize,
    /// The graph is rebuilt from the embeddings once more than this fraction of its points
    /// are dead (removed or re-embedded photos).
    pub rebuild_fraction: f64,
    /// Construction parameters of the graph.
    pub params: AnnParams,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            exact_below: 2000,
            ef_search: 64,
            rebuild_fraction: 0.10,
            params: AnnParams::default(),
        }
    }
}

#[derive(Clone)]
struct Trees {
    photos: sled::Tree,
    paths: sled::Tree,
    hashes: sled::Tree,
    embeddings: sled::Tree,
    ann_points: sled::Tree,
    regions: sled::Tree,
    failures: sled::Tree,
    keypoints: sled::Tree,
    meta: sled::Tree,
}

/// Photo records and their embeddings on disk, with nearest-neighbour search.
///
/// `Store` is `Send + Sync`: reads and writes take `&self` and may run from several threads;
/// searching takes `&mut self` because it loads, tops up or rebuilds the graph lazily.
pub struct Store {
    db: sled::Db,
    t: Trees,
    ann_dir: PathBuf,
    /// Held for writing while a model change drops the vectors, for reading by writers.
    model_lock: RwLock<()>,
    /// Bumped after every write, so the graph knows when to re-read its live set.
    writes: AtomicU64,
    ann: Option<AnnState>,
    opts: SearchOptions,
    status: AnnStatus,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("ann_dir", &self.ann_dir)
            .field("options", &self.opts)
            .field("ann", &self.status)
            .finish_non_exhaustive()
    }
}

/// How long [`Store::open`] waits for the database's lock: a store dropped a moment ago
/// releases it only when sled's flusher thread ends.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// sled's page cache. Its default, 1 GiB, fills up when `dups` or `clusters` read every
/// vector of a large collection, beside the copy they keep; sled overshoots its cap about
/// 2.5×, so at a million photos 1 GiB cost 0.92× the vectors' memory, 128 MiB 0.2× and 32 MiB
/// 0.07×. `index` writes single records, at the same rate with 32 MiB as with 1 GiB
/// (docs/benchmarks.md, "Curation at scale").
const CACHE_BYTES: u64 = 32 << 20;

/// Opens the sled database at `path`, waiting up to [`LOCK_WAIT`] for its lock.
fn open_db(path: &Path) -> Result<sled::Db, IndexError> {
    let start = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            // sled reports a held lock as an `Other` I/O error with this text
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if start.elapsed() >= LOCK_WAIT {
                    return Err(IndexError::Locked(path.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// Drops the perceptual hash of every record (hashes of an older kind), so that the next
/// `index` computes the current one. Idempotent: a kill part-way is finished on reopening.
fn forget_perceptual_hashes(photos: &sled::Tree) -> Result<(), IndexError> {
    for entry in photos.iter() {
        let (key, value) = entry?;
        let mut record = decode_record(&value)?;
        if record.perceptual_hash.take().is_some() {
            photos.insert(key, encode_record(&record)?)?;
        }
    }
    photos.flush()?;
    Ok(())
}

impl Store {
    /// Opens (creating if missing) the store in `dir`: the database in `dir/db`, the graph
    /// dumps in `dir/ann`. Does not touch the graph; that happens at the first search.
    pub fn open(dir: &Path) -> Result<Store, IndexError> {
        let ann_dir = dir.join("ann");
        std::fs::create_dir_all(&ann_dir).map_err(|e| IndexError::io(&ann_dir, e))?;
        let db = open_db(&dir.join("db"))?;
        let t = Trees {
            photos: db.open_tree("photos")?,
            paths: db.open_tree("paths")?,
            hashes: db.open_tree("hashes")?,
            embeddings: db.open_tree("embeddings")?,
            ann_points: db.open_tree("ann_points")?,
            regions: db.open_tree("regions")?,
            failures: db.open_tree("failures")?,
            keypoints: db.open_tree("keypoints")?,
            meta: db.open_tree("meta")?,
        };
        match t.meta.get(keys::SCHEMA)? {
            None => {
                t.meta.insert(keys::SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| IndexError::Corrupt("meta schema_version".into()))?;
                if found > SCHEMA_VERSION {
                    return Err(IndexError::NewerSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    // Older layouts still read; from now on records of the current
                    // layout may be written, which older binaries must refuse.
                    if found < keys::DCT_HASH_SCHEMA {
                        forget_perceptual_hashes(&t.photos)?;
                    }
                    t.meta.insert(keys::SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                }
            }
        }
        let store = Store {
            db,
            t,
            ann_dir,
            model_lock: RwLock::new(()),
            writes: AtomicU64::new(0),
            ann: None,
            opts: SearchOptions::default(),
            status: AnnStatus::default(),
        };
        if store.t.meta.contains_key(keys::PURGE_PENDING)? {
            store.purge_embeddings()?;
        }
        Ok(store)
    }

    /// The search options in force.
    pub fn options(&self) -> SearchOptions {
        self.opts
    }

    /// Changes the search options (e.g. `exact_below: 0` to always use the graph).
    /// Graph parameters apply to graphs built from then on.
    pub fn set_options(&mut self, opts: SearchOptions) {
        self.opts = opts;
    }

    /// A summary of the store.
    pub fn meta(&self) -> Result<Meta, IndexError> {
        Ok(Meta {
            schema_version: SCHEMA_VERSION,
            dim: self.dim()?,
            model_id: self.model_id()?,
            ann_generation: get_u64(&self.t.meta, keys::GENERATION)?,
            photos: get_u64(&self.t.meta, keys::PHOTO_COUNT)? as usize,
            embeddings: get_u64(&self.t.meta, keys::EMB_COUNT)? as usize,
        })
    }

    fn dim(&self) -> Result<Option<usize>, IndexError> {
        let d = self.t.meta.get(keys::DIM)?;
        d.map(|v| keys::decode_u64(&v, keys::DIM).map(|d| d as usize))
            .transpose()
    }

    fn model_id(&self) -> Result<Option<String>, IndexError> {
        let m = self.t.meta.get(keys::MODEL_ID)?;
        m.map(|v| {
            String::from_utf8(v.to_vec()).map_err(|_| IndexError::Corrupt("meta model_id".into()))
        })
        .transpose()
    }

    /// Declares the model that produces the vectors. If a different model (or dimension) was
    /// declared before, every embedding is dropped (records stay, so they get re-embedded)
    /// and the graph invalidated; returns true in that case. The first declaration returns
    /// false.
    pub fn set_model(&self, model_id: &str, dim: usize) -> Result<bool, IndexError> {
        if dim == 0 {
            return Err(IndexError::InvalidArgument("vector dimension 0".into()));
        }
        let _exclusive = self.model_lock.write().unwrap_or_else(|p| p.into_inner());
        let current = self.model_id()?;
        if current.as_deref() == Some(model_id) && self.dim()? == Some(dim) {
            return Ok(false);
        }
        let drop_vectors = current.is_some() || get_u64(&self.t.meta, keys::EMB_COUNT)? > 0;
        self.t.meta.transaction(|m| {
            m.insert(keys::MODEL_ID, model_id.as_bytes())?;
            keys::tx_set_u64(m, keys::DIM, dim as u64)?;
            if drop_vectors {
                keys::tx_add(m, keys::GENERATION, 1)?;
                keys::tx_set_u64(m, keys::EMB_COUNT, 0)?;
                m.insert(keys::PURGE_PENDING, &[1u8][..])?;
            }
            Ok(())
        })?;
        if drop_vectors {
            self.purge_embeddings()?;
        }
        self.db.flush()?;
        self.bump();
        Ok(drop_vectors)
    }

    /// Clears the vectors of a replaced model (after the transaction that switched models;
    /// redone at open if interrupted).
    fn purge_embeddings(&self) -> Result<(), IndexError> {
        self.t.embeddings.clear()?;
        self.t.ann_points.clear()?;
        self.t.regions.clear()?;
        self.t.meta.remove(keys::PURGE_PENDING)?;
        self.db.flush()?;
        Ok(())
    }

    fn bump(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The photo at `path`, if indexed.
    pub fn get_by_path(&self, path: &Path) -> Result<Option<(PhotoId, PhotoRecord)>, IndexError> {
        let Some(id) = self.t.paths.get(path_key(path))? else {
            return Ok(None);
        };
        let id = decode_u64_be(&id, "path index")?;
        Ok(self.get(id)?.map(|r| (id, r)))
    }

    /// The record of photo `id`.
    pub fn get(&self, id: PhotoId) -> Result<Option<PhotoRecord>, IndexError> {
        self.t
            .photos
            .get(id_key(id))?
            .map(|v| decode_record(&v))
            .transpose()
    }

    /// Ids of the photos whose file has this blake3 hash.
    pub fn ids_by_hash(&self, blake3: &[u8; 32]) -> Result<Vec<PhotoId>, IndexError> {
        self.t
            .hashes
            .scan_prefix(blake3)
            .keys()
            .map(|k| decode_u64_be(k?.get(32..).unwrap_or_default(), "hash index"))
            .collect()
    }

    /// Paths that could not be indexed, with the reason.
    pub fn failures(&self) -> Result<Vec<(PathBuf, String)>, IndexError> {
        self.t
            .failures
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((path_from_key(&k), String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
    }

    /// All photo records, in id order.
    pub fn photos(&self) -> impl Iterator<Item = Result<(PhotoId, PhotoRecord), IndexError>> {
        self.t.photos.iter().map(|r| {
            let (k, v) = r?;
            Ok((decode_u64_be(&k, "photo id")?, decode_record(&v)?))
        })
    }

    /// Ids of the photos that have a record but no embedding (e.g. after a model change).
    pub fn ids_without_embedding(&self) -> Result<Vec<PhotoId>, IndexError> {
        let mut out = Vec::new();
        for k in self.t.photos.iter().keys() {
            let k = k?;
            if !self.t.embeddings.contains_key(&k)? {
                out.push(decode_u64_be(&k, "photo id")?);
            }
        }
        Ok(out)
    }

    /// The embedding of photo `id`.
    pub fn embedding(&self, id: PhotoId) -> Result<Option<Vec<f32>>, IndexError> {
        let v = self.t.embeddings.get(id_key(id))?;
        Ok(v.map(|v| decode_embedding(&v)).transpose()?.map(|(_, v)| v))
    }

    /// All embeddings, in id order.
    pub fn embeddings(&self) -> impl Iterator<Item = Result<(PhotoId, Vec<f32>), IndexError>> {
        self.t.embeddings.iter().map(|r| {
            let (k, v) = r?;
            Ok((decode_u64_be(&k, "embedding id")?, decode_embedding(&v)?.1))
        })
    }

    /// Makes every write so far durable (sled otherwise flushes every 500 ms).
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }
}
