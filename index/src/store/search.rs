//! Nearest-neighbour search: exact over the embeddings tree for small sets, otherwise the
//! HNSW graph, loaded from its dump, topped up or rebuilt lazily, and dumped again.
//!
//! Graph points are keyed by embedding sequence number; `ann_points` says which are alive
//! and for which photo. Invariant of an in-memory graph at sequence `seq`: it contains every
//! embedding with sequence ≤ `seq` that was alive when it reached `seq`. A dump records the
//! generation and `seq` it reflects (plus file lengths and CRCs); on load it is topped up
//! with the live points above `seq`, or rebuilt if it does not match.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bincode::Options;
use rayon::prelude::*;

use super::keys::{self, get_u64};
use super::write::check_vector;
use super::Store;
use crate::ann::{remove_other_dumps, sync_dir, Ann, DumpRecord};
use crate::dist::{similarity, similarity_from_distance};
use crate::links::{links_file_is_intact, read_links, write_links, LinksRecord};
use crate::record::{
    codec, decode_embedding, decode_u64_be, embedding_vector_into, id_key, KnnGraph,
};
use crate::topk::{exact_knn_graph, TopK};
use crate::{IndexError, PhotoId};

/// Vectors read and inserted per parallel batch while (re)building.
const BATCH: usize = 8192;

/// What the graph cache did since the store was opened (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnnStatus {
    /// Points in the in-memory graph, dead ones included (0 when none is loaded).
    pub points: usize,
    /// Live points in it.
    pub live: usize,
    /// Dumps loaded and accepted.
    pub loads: u64,
    /// Graphs built from the embeddings tree.
    pub rebuilds: u64,
    /// Loaded or cached graphs that received the points added since.
    pub top_ups: u64,
    /// Dumps written.
    pub dumps: u64,
    /// Neighbour lists read from a dump's links file, without loading its graph.
    pub link_reads: u64,
}

pub(super) struct AnnState {
    ann: Ann,
    generation: u64,
    seq: u64,
    /// Live sequence number → photo id.
    live: HashMap<usize, PhotoId>,
    /// `Store::writes` when `live` was read.
    writes_seen: u64,
    /// Whether the dump on disk holds this graph.
    dumped: bool,
}

impl AnnState {
    /// Live neighbours of `query` as `(id, similarity)`, best first, at most `k`; skips `skip`.
    /// Each live photo's `k` nearest, searched with `ef` candidates.
    fn searched_lists(&self, k: usize, ef: usize) -> KnnGraph {
        let queries: Vec<_> = (self.ann.points().into_iter())
            .filter_map(|p| self.live.get(&p.get_origin_id()).map(|id| (*id, p)))
            .collect();
        queries
            .par_iter()
            .map(|(id, p)| (*id, self.query(p.get_v(), k, ef, Some(*id))))
            .collect()
    }

    /// Each live photo's `k` nearest among its bottom-layer links.
    fn linked_lists(&self, k: usize) -> KnnGraph {
        self.ann
            .bottom_links()
            .into_par_iter()
            .filter_map(|(seq, links)| {
                let id = *self.live.get(&seq)?;
                Some((id, nearest_live_links(id, &links, &self.live, k)))
            })
            .collect()
    }

    pub(super) fn query(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        skip: Option<PhotoId>,
    ) -> Vec<(PhotoId, f32)> {
        let ef = ef.max(k + usize::from(skip.is_some()));
        let collect = |found: Vec<(usize, f32)>| -> Vec<(PhotoId, f32)> {
            found
                .into_iter()
                .filter_map(|(seq, d)| {
                    self.live
                        .get(&seq)
                        .map(|id| (*id, similarity_from_distance(d)))
                })
                .filter(|(id, _)| Some(*id) != skip)
                .take(k)
                .collect()
        };
        let out = collect(self.ann.search(query, ef, ef, None));
        let wanted = k.min(self.live.len() - usize::from(skip.is_some()).min(self.live.len()));
        if out.len() >= wanted {
            return out;
        }
        // Too many tombstones among the candidates: let hnsw_rs skip them while searching.
        let alive = |seq: &usize| self.live.contains_key(seq);
        collect(self.ann.search(query, ef, 2 * ef, Some(&alive)))
    }
}

/// The `k` nearest live photos among `links` (sequence number, distance) of photo `id`, as
/// `(photo, similarity)`, best first.
fn nearest_live_links(
    id: PhotoId,
    links: &[(usize, f32)],
    live: &HashMap<usize, PhotoId>,
    k: usize,
) -> Vec<(PhotoId, f32)> {
    let mut hits: Vec<(PhotoId, f32)> = links
        .iter()
        .filter_map(|(s, d)| Some((*live.get(s)?, similarity_from_distance(*d))))
        .filter(|(other, _)| *other != id)
        .collect();
    hits.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.dedup_by_key(|h| h.0);
    hits.truncate(k);
    // a million lists of up to 2 × M links each: keep only what is returned
    hits.shrink_to_fit();
    hits
}

impl Store {
    /// What the graph cache did since open.
    pub fn ann_status(&self) -> AnnStatus {
        let mut s = self.status;
        if let Some(st) = &self.ann {
            s.points = st.ann.len();
            s.live = st.live.len();
        }
        s
    }

    /// The `k` nearest photos to `query` by cosine similarity (vectors L2-normalised by the
    /// caller), best first; removed photos never appear. Exact below
    /// [`super::SearchOptions::exact_below`] embeddings, otherwise through the graph (loading,
    /// topping up or rebuilding it as needed, then dumping it so the next process opens fast).
    pub fn search(&mut self, query: &[f32], k: usize) -> Result<Vec<(PhotoId, f32)>, IndexError> {
        check_vector(query, self.dim()?)?;
        if k == 0 || self.embedding_count()? < self.opts.exact_below.max(1) {
            return self.search_exact(query, k);
        }
        self.ensure_ann()?;
        let Some(st) = &self.ann else {
            return Ok(Vec::new());
        };
        let mut out = st.query(query, k, self.opts.ef_search, None);
        if out.len() < k.min(st.live.len()) {
            out = self.search_exact(query, k)?;
        }
        self.dump_ann()?;
        Ok(out)
    }

    /// Exact top-`k` by brute force over the embeddings tree, best first (ties: lower id).
    pub fn search_exact(&self, query: &[f32], k: usize) -> Result<Vec<(PhotoId, f32)>, IndexError> {
        let dim = self.dim()?;
        if dim.is_none() {
            return Ok(Vec::new());
        }
        check_vector(query, dim)?;
        let mut top = TopK::new(k);
        let mut buf = Vec::new();
        for r in self.t.embeddings.iter() {
            let (key, value) = r?;
            embedding_vector_into(&value, &mut buf)?;
            check_vector(&buf, dim)
                .map_err(|e| IndexError::Corrupt(format!("stored vector: {e}")))?;
            top.push(
                decode_u64_be(&key, "embedding id")?,
                similarity(query, &buf),
            );
        }
        Ok(top.into_sorted())
    }

    /// Makes sure the graph reflects the embeddings tree and is dumped (call at the end of
    /// indexing). Does nothing below `exact_below` embeddings.
    pub fn sync_ann(&mut self) -> Result<(), IndexError> {
        if self.embedding_count()? < self.opts.exact_below.max(1) {
            return Ok(());
        }
        self.ensure_ann()?;
        self.dump_ann()
    }

    /// The `k` nearest neighbours of every photo with an embedding, excluding the photo
    /// itself, best first, in id order; computed in parallel (rayon) through the graph, or
    /// exactly below `exact_below` embeddings.
    pub fn knn_graph(&mut self, k: usize) -> Result<KnnGraph, IndexError> {
        let ef = self.opts.ef_search;
        self.neighbour_lists(k, |st| st.searched_lists(k, ef))
    }

    /// Like [`Store::knn_graph`], but each photo's neighbours are read from the links that
    /// building the graph chose (its bottom layer) instead of searched again: O(n · M), no
    /// query per photo. The lists are the nearest of up to 2 × M links picked for diversity,
    /// so they can differ from the true k nearest, but a photo's nearest neighbour (a near
    /// copy) is always among them. Exact below [`SearchOptions::exact_below`] photos, as
    /// `knn_graph`.
    ///
    /// When no graph is in memory and the dump is current, the links are read from the file
    /// written beside the dump, and the graph is not loaded at all (it holds a second copy of
    /// the vectors and its own neighbour structures: about 3× the vectors' memory).
    pub fn linked_graph(&mut self, k: usize) -> Result<KnnGraph, IndexError> {
        if self.ann.is_none() && self.embedding_count()? >= self.opts.exact_below.max(1) {
            if let Some(graph) = self.stored_links(k)? {
                self.status.link_reads += 1;
                return Ok(graph);
            }
        }
        let graph = self.neighbour_lists(k, |st| st.linked_lists(k))?;
        self.ensure_links()?;
        Ok(graph)
    }

    /// Every live photo's `k` nearest among its links, read from the current dump's links
    /// file; `None` when there is no such file, it is damaged, or photos were embedded
    /// since the dump.
    fn stored_links(&self, k: usize) -> Result<Option<KnnGraph>, IndexError> {
        let generation = get_u64(&self.t.meta, keys::GENERATION)?;
        let seq = get_u64(&self.t.meta, keys::EMB_SEQ)?;
        let (Some(dump), Some(links)) = (self.dump_record(), self.links_record()) else {
            return Ok(None);
        };
        if dump.generation != generation || dump.seq != seq || links.basename != dump.basename {
            return Ok(None);
        }
        let live = self.read_live()?;
        let mut graph = Vec::with_capacity(live.len());
        let complete = read_links(&self.ann_dir, &links, |seq, point_links| {
            if let Some(&id) = live.get(&seq) {
                graph.push((id, nearest_live_links(id, point_links, &live, k)));
            }
        })?;
        if !complete || graph.len() != live.len() {
            return Ok(None);
        }
        graph.sort_unstable_by_key(|(id, _)| *id);
        Ok(Some(graph))
    }

    /// Writes the links file of the current dump when the graph in memory is that dump and
    /// its links cannot be read (a store dumped by an older version, a damaged file), so
    /// that the next `linked_graph` reads them without loading the graph.
    fn ensure_links(&mut self) -> Result<(), IndexError> {
        let Some(st) = &self.ann else {
            return Ok(());
        };
        let Some(dump) = self.dump_record() else {
            return Ok(());
        };
        let current = self.links_record().is_some_and(|l| {
            l.basename == dump.basename && links_file_is_intact(&self.ann_dir, &l)
        });
        if !st.dumped || current {
            return Ok(());
        }
        let links = write_links(&st.ann, &self.ann_dir, &dump.basename)?;
        sync_dir(&self.ann_dir)?;
        self.t.meta.insert(keys::ANN_LINKS, encode(&links)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// The record of the current dump, if any can be decoded.
    fn dump_record(&self) -> Option<DumpRecord> {
        let bytes = self.t.meta.get(keys::ANN_DUMP).ok()??;
        codec().deserialize(&bytes).ok()
    }

    /// The record of the current dump's links file, if any can be decoded.
    fn links_record(&self) -> Option<LinksRecord> {
        let bytes = self.t.meta.get(keys::ANN_LINKS).ok()??;
        codec().deserialize(&bytes).ok()
    }

    /// Every photo's `k` neighbours: exact below `exact_below` embeddings, else `from_graph`
    /// on the graph (brought up to date first, dumped after), in id order.
    fn neighbour_lists(
        &mut self,
        k: usize,
        from_graph: impl Fn(&AnnState) -> KnnGraph,
    ) -> Result<KnnGraph, IndexError> {
        if self.embedding_count()? < self.opts.exact_below.max(1) {
            let points: Vec<_> = self.embeddings().collect::<Result<_, _>>()?;
            return Ok(exact_knn_graph(&points, k));
        }
        self.ensure_ann()?;
        let Some(st) = &self.ann else {
            return Ok(Vec::new());
        };
        let mut out = from_graph(st);
        out.sort_unstable_by_key(|(id, _)| *id);
        self.dump_ann()?;
        Ok(out)
    }

    /// Frees the in-memory graph (the next search loads or builds it again).
    pub fn release_ann(&mut self) {
        self.ann = None;
    }

    pub(super) fn embedding_count(&self) -> Result<usize, IndexError> {
        Ok(get_u64(&self.t.meta, keys::EMB_COUNT)? as usize)
    }

    /// Brings the in-memory graph up to date with the trees.
    pub(super) fn ensure_ann(&mut self) -> Result<(), IndexError> {
        let writes = self.writes.load(Ordering::Acquire);
        let generation = get_u64(&self.t.meta, keys::GENERATION)?;
        let seq = get_u64(&self.t.meta, keys::EMB_SEQ)?;
        if let Some(st) = &self.ann {
            if st.generation == generation && st.writes_seen == writes && st.seq == seq {
                return Ok(());
            }
            if st.generation != generation {
                self.ann = None;
            }
        }
        let live = self.read_live()?;
        if self.ann.is_none() {
            self.ann = self.load_dump(generation, seq);
        }
        match self.ann.take() {
            Some(mut st) => {
                let missing: Vec<(usize, PhotoId)> = (live.iter())
                    .filter(|(s, _)| **s as u64 > st.seq)
                    .map(|(s, id)| (*s, *id))
                    .collect();
                if !missing.is_empty() {
                    let vectors = (missing.iter())
                        .map(|(s, id)| Ok((self.stored_vector(*id, *s)?, *s)))
                        .collect::<Result<Vec<_>, IndexError>>()?;
                    st.ann
                        .insert(&vectors.iter().map(|(v, s)| (v.as_slice(), *s)).collect());
                    st.dumped = false;
                    self.status.top_ups += 1;
                }
                let dead = st.ann.len().saturating_sub(live.len());
                if dead as f64 > self.opts.rebuild_fraction * st.ann.len() as f64 {
                    self.rebuild(generation, seq, live, writes)?;
                } else {
                    (st.seq, st.live, st.writes_seen) = (seq, live, writes);
                    self.ann = Some(st);
                }
            }
            None => self.rebuild(generation, seq, live, writes)?,
        }
        Ok(())
    }

    /// Sequence number → photo id of every live embedding.
    fn read_live(&self) -> Result<HashMap<usize, PhotoId>, IndexError> {
        let mut live = HashMap::new();
        for r in self.t.ann_points.iter() {
            let (k, v) = r?;
            let seq = decode_u64_be(&k, "ann point")?;
            live.insert(seq as usize, decode_u64_be(&v, "ann point id")?);
        }
        Ok(live)
    }

    /// The vector stored for `id`, checked to be the one with sequence number `seq`.
    fn stored_vector(&self, id: PhotoId, seq: usize) -> Result<Vec<f32>, IndexError> {
        let v = self.t.embeddings.get(id_key(id))?;
        let (s, v) = decode_embedding(&v.ok_or_else(|| {
            IndexError::Corrupt(format!("live point {seq} has no embedding (photo {id})"))
        })?)?;
        if s as usize != seq {
            return Err(IndexError::Corrupt(format!(
                "photo {id}: point {seq} vs embedding {s}"
            )));
        }
        check_vector(&v, self.dim()?)
            .map_err(|e| IndexError::Corrupt(format!("stored vector: {e}")))?;
        Ok(v)
    }

    /// The dumped graph, if it exists, matches the store and its files are intact.
    fn load_dump(&mut self, generation: u64, seq: u64) -> Option<AnnState> {
        let rec = self.dump_record()?;
        let dim = self.dim().ok()??;
        if rec.generation != generation || rec.seq > seq || rec.dim != dim as u64 {
            return None;
        }
        let ann = Ann::load(&self.ann_dir, &rec)?;
        // Files of a dump interrupted before its record was switched are of no use.
        let _ = remove_other_dumps(&self.ann_dir, Some(&rec.basename));
        self.status.loads += 1;
        Some(AnnState {
            ann,
            generation,
            seq: rec.seq,
            live: HashMap::new(),
            writes_seen: 0,
            dumped: true,
        })
    }

    /// Builds the graph from the embeddings tree.
    fn rebuild(
        &mut self,
        generation: u64,
        seq: u64,
        live: HashMap<usize, PhotoId>,
        writes: u64,
    ) -> Result<(), IndexError> {
        let dim = self.dim()?;
        let ann = Ann::new(self.opts.params, live.len());
        let mut batch: Vec<(Vec<f32>, usize)> = Vec::with_capacity(BATCH);
        let mut first = true;
        let mut flush = |batch: &mut Vec<(Vec<f32>, usize)>| {
            // hnsw_rs links a point only if an entry point exists when it starts inserting:
            // insert the very first one alone.
            let split = usize::from(std::mem::take(&mut first)).min(batch.len());
            let (head, tail) = batch.split_at(split);
            ann.insert(&head.iter().map(|(v, s)| (v.as_slice(), *s)).collect());
            ann.insert(&tail.iter().map(|(v, s)| (v.as_slice(), *s)).collect());
            batch.clear();
        };
        for r in self.t.embeddings.iter() {
            let (_, value) = r?;
            let (s, v) = decode_embedding(&value)?;
            if !live.contains_key(&(s as usize)) {
                continue;
            }
            check_vector(&v, dim)
                .map_err(|e| IndexError::Corrupt(format!("stored vector: {e}")))?;
            batch.push((v, s as usize));
            if batch.len() == BATCH {
                flush(&mut batch);
            }
        }
        flush(&mut batch);
        self.status.rebuilds += 1;
        self.ann = Some(AnnState {
            ann,
            generation,
            seq,
            live,
            writes_seen: writes,
            dumped: false,
        });
        Ok(())
    }

    /// Writes the in-memory graph under a new name, switches the meta record to it (durably),
    /// then deletes the older files.
    fn dump_ann(&mut self) -> Result<(), IndexError> {
        let Some(st) = &mut self.ann else {
            return Ok(());
        };
        if st.dumped {
            return Ok(());
        }
        let keep = if st.ann.len() == 0 {
            self.t.meta.remove(keys::ANN_DUMP)?;
            self.t.meta.remove(keys::ANN_LINKS)?;
            self.db.flush()?;
            None
        } else {
            let mut n = 0;
            let base = loop {
                let base = format!("g{}-s{}-{n}", st.generation, st.seq);
                if !DumpRecord::files_exist(&self.ann_dir, &base) {
                    break base;
                }
                n += 1;
            };
            let rec = st.ann.dump(&self.ann_dir, &base, st.generation, st.seq)?;
            let links = write_links(&st.ann, &self.ann_dir, &rec.basename)?;
            sync_dir(&self.ann_dir)?;
            self.t.meta.insert(keys::ANN_DUMP, encode(&rec)?)?;
            self.t.meta.insert(keys::ANN_LINKS, encode(&links)?)?;
            self.db.flush()?;
            self.status.dumps += 1;
            Some(rec.basename)
        };
        st.dumped = true;
        remove_other_dumps(&self.ann_dir, keep.as_deref())?;
        sync_dir(&self.ann_dir)
    }
}

/// bincode of a meta record.
fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, IndexError> {
    codec()
        .serialize(value)
        .map_err(|e| IndexError::Ann(e.to_string()))
}
