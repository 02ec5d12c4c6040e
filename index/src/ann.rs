//! The HNSW graph (hnsw_rs) as a disposable search cache, and its dump files.
//!
//! Points are keyed by the *embedding sequence number* of the vector (not by photo id), so a
//! re-embedded photo's old point is simply a dead sequence number. Which sequence numbers are
//! alive, and for which photo, is the business of the store.

use std::fs::File;
use std::io::Read;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::{Hnsw, Neighbour, Point};
use hnsw_rs::hnswio::{HnswIo, ReloadOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dist::DistUnitDot;
use crate::IndexError;

/// hnsw_rs refuses to dump a graph built with another layer count than its maximum (16).
const MAX_LAYER: usize = 16;

/// Construction parameters of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Links per point and layer (M); layer 0 keeps twice as many.
    pub max_nb_connection: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            max_nb_connection: 16,
            ef_construction: 200,
        }
    }
}

/// What the store remembers (in its meta tree) about the dump on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DumpRecord {
    /// `<basename>.hnsw.graph` and `<basename>.hnsw.data` in the ann directory.
    pub basename: String,
    /// Store generation (model) the graph was built for.
    pub generation: u64,
    /// Every embedding with a sequence number up to this one was in the store when dumped.
    pub seq: u64,
    /// Number of points (dead ones included).
    pub points: u64,
    /// Vector dimension.
    pub dim: u64,
    /// Length and CRC-32 of the graph file.
    pub graph: (u64, u32),
    /// Length and CRC-32 of the data file.
    pub data: (u64, u32),
}

impl DumpRecord {
    pub fn files(&self, dir: &Path) -> [PathBuf; 2] {
        files_of(dir, &self.basename)
    }

    /// Whether either file of dump `basename` exists in `dir`.
    pub fn files_exist(dir: &Path, basename: &str) -> bool {
        files_of(dir, basename).iter().any(|p| p.exists())
    }
}

fn files_of(dir: &Path, basename: &str) -> [PathBuf; 2] {
    [
        dir.join(format!("{basename}.hnsw.graph")),
        dir.join(format!("{basename}.hnsw.data")),
    ]
}

/// A point of the graph, borrowed for parallel k-NN queries.
pub(crate) type GraphPoint = std::sync::Arc<Point<'static, f32>>;

/// The HNSW graph.
///
/// A graph loaded from a dump does not copy its vectors into memory: its points borrow them
/// from a read-only memory map of the dump's data file, held by the loader. The pages a
/// search touches come from the page cache, and the kernel can drop them again, so the
/// process holds only the graph's links (about 0.6× the vectors) instead of a second copy
/// of the vectors beside them.
pub(crate) struct Ann {
    hnsw: ManuallyDrop<Hnsw<'static, f32, DistUnitDot>>,
    /// The loader of a graph read from a dump, owned here (from `Box::into_raw`) and freed
    /// in `drop`, after the graph whose points borrow its memory map.
    loader: Option<NonNull<HnswIo>>,
}

#[allow(unsafe_code)]
impl Drop for Ann {
    fn drop(&mut self) {
        // SAFETY: `hnsw` is dropped exactly once, here, and before the loader it borrows;
        // `loader` came from `Box::into_raw` and nothing else frees it.
        unsafe {
            ManuallyDrop::drop(&mut self.hnsw);
            if let Some(loader) = self.loader.take() {
                drop(Box::from_raw(loader.as_ptr()));
            }
        }
    }
}

// SAFETY: the loader is only touched by `drop`, which has `&mut self`; everything shared
// goes through the graph, which is itself `Send + Sync` (its mapped vectors are read-only).
#[allow(unsafe_code)]
unsafe impl Send for Ann {}
#[allow(unsafe_code)]
unsafe impl Sync for Ann {}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann").field("points", &self.len()).finish()
    }
}

impl Ann {
    /// An empty graph sized for about `capacity` points.
    pub fn new(params: AnnParams, capacity: usize) -> Self {
        let m = params.max_nb_connection.clamp(2, 256);
        let hnsw = Hnsw::new(
            m,
            capacity.max(1),
            MAX_LAYER,
            params.ef_construction,
            DistUnitDot::new(),
        );
        Ann {
            hnsw: ManuallyDrop::new(hnsw),
            loader: None,
        }
    }

    /// Number of points, dead ones included.
    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    /// Inserts `(vector, key)` pairs in parallel (rayon's global pool).
    pub fn insert(&self, points: &Vec<(&[f32], usize)>) {
        self.hnsw.parallel_insert_slice(points);
    }

    /// Up to `ef` nearest points as `(key, distance)`, nearest first. With a filter, only
    /// keys it accepts (hnsw_rs then explores more of the graph).
    pub fn search(
        &self,
        query: &[f32],
        knbn: usize,
        ef: usize,
        filter: Option<&(dyn Fn(&usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        let found: Vec<Neighbour> = match filter {
            None => self.hnsw.search(query, knbn, ef),
            Some(f) => {
                let f = |id: &usize| f(id);
                self.hnsw.search_filter(query, knbn, ef, Some(&f))
            }
        };
        found.into_iter().map(|n| (n.d_id, n.distance)).collect()
    }

    /// Every point of the graph (dead ones included).
    pub fn points(&self) -> Vec<GraphPoint> {
        if self.len() == 0 {
            return Vec::new();
        }
        self.hnsw.get_point_indexation().into_iter().collect()
    }

    /// Each point's links on the bottom layer as `(key, [(key, distance)])`: the neighbours
    /// that building the graph chose (at most 2 × M, picked for diversity, so a point's
    /// nearest neighbour is always among them), read without any search.
    pub fn bottom_links(&self) -> Vec<(usize, Vec<(usize, f32)>)> {
        self.points()
            .par_iter()
            .map(|p| (p.get_origin_id(), bottom_links_of(p)))
            .collect()
    }

    /// Writes the graph as `<basename>.hnsw.{graph,data}` in `dir`, fsynced, and describes it.
    /// hnsw_rs may pick another basename when the files exist; the record holds the real one.
    pub fn dump(
        &self,
        dir: &Path,
        basename: &str,
        generation: u64,
        seq: u64,
    ) -> Result<DumpRecord, IndexError> {
        let dumped = catch_unwind(AssertUnwindSafe(|| self.hnsw.file_dump(dir, basename)))
            .map_err(|_| {
                IndexError::Ann(format!("hnsw_rs panicked dumping into {}", dir.display()))
            })?
            .map_err(|e| IndexError::Ann(format!("dumping into {}: {e}", dir.display())))?;
        let [graph, data] = files_of(dir, &dumped);
        let graph = checksum(&graph, true)?;
        let data = checksum(&data, true)?;
        let dim = self.points().first().map_or(0, |p| p.get_v().len());
        Ok(DumpRecord {
            basename: dumped,
            generation,
            seq,
            points: self.len() as u64,
            dim: dim as u64,
            graph,
            data,
        })
    }

    /// Loads the dump `record` describes, after checking the files' lengths and checksums
    /// (hnsw_rs's loader panics or exits the process on malformed files, so it is only
    /// handed files that are byte for byte what it wrote). `None` when the dump is missing,
    /// damaged or does not match the record.
    #[allow(unsafe_code)]
    pub fn load(dir: &Path, record: &DumpRecord) -> Option<Ann> {
        let [graph, data] = record.files(dir);
        if checksum(&graph, false).ok()? != record.graph
            || checksum(&data, false).ok()? != record.data
        {
            return None;
        }
        // The loaded graph borrows its loader (which maps the data file) for its whole life:
        // the loader goes on the heap and `Ann` frees it after the graph.
        let options = ReloadOptions::default().set_mmap(true);
        let loader = NonNull::from(Box::leak(Box::new(HnswIo::new_with_options(
            dir,
            &record.basename,
            options,
        ))));
        let loaded = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the loader lives until `Ann::drop` frees it, after the graph.
            let io: &'static mut HnswIo = unsafe { &mut *loader.as_ptr() };
            io.load_hnsw::<f32, DistUnitDot>()
        }));
        let hnsw = match loaded {
            Ok(Ok(hnsw)) => hnsw,
            _ => {
                // SAFETY: no graph borrows the loader when loading failed.
                drop(unsafe { Box::from_raw(loader.as_ptr()) });
                return None;
            }
        };
        let ann = Ann {
            hnsw: ManuallyDrop::new(hnsw),
            loader: Some(loader),
        };
        let dim_ok = ann
            .points()
            .first()
            .is_none_or(|p| p.get_v().len() as u64 == record.dim);
        (ann.len() as u64 == record.points && dim_ok).then_some(ann)
    }
}

/// A point's links on the bottom layer as `(key, distance)`.
pub(crate) fn bottom_links_of(point: &GraphPoint) -> Vec<(usize, f32)> {
    point
        .get_neighborhood_id()
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.d_id, n.distance))
        .collect()
}

/// Length and CRC-32 of a file; with `sync`, fsyncs it first.
pub(crate) fn checksum(path: &Path, sync: bool) -> Result<(u64, u32), IndexError> {
    let mut file = File::open(path).map_err(|e| IndexError::io(path, e))?;
    if sync {
        file.sync_all().map_err(|e| IndexError::io(path, e))?;
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| IndexError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize()))
}

/// Removes every dump file in `dir` (graph, data and links) except those of `keep`.
pub(crate) fn remove_other_dumps(dir: &Path, keep: Option<&str>) -> Result<(), IndexError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IndexError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| IndexError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let base = [".hnsw.graph", ".hnsw.data", ".hnsw.links"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix));
        if let Some(base) = base {
            if Some(base) != keep {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| IndexError::io(path, e))?;
            }
        }
    }
    Ok(())
}

/// fsyncs a directory so that file creations and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IndexError::io(dir, e))
}
