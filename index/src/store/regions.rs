//! Region queries by photo: a few extra query vectors per photo, each standing for a part
//! of it, written and dropped with its embedding. Searching them finds the photos that show
//! only that part (crops), which the photo's own vector ranks low.

use std::collections::HashMap;

use rayon::prelude::*;

use super::Store;
use crate::dist::similarity;
use crate::record::{decode_regions, decode_u64_be, id_key, KnnGraph};
use crate::topk::TopK;
use crate::{IndexError, PhotoId};

/// Photos whose region queries are decoded and searched at a time.
const BATCH: usize = 4096;

impl Store {
    /// The region queries stored with photo `id`, each as wide as the embeddings.
    pub fn region_queries(&self, id: PhotoId) -> Result<Option<Vec<Vec<f32>>>, IndexError> {
        let Some(dim) = self.dim()? else {
            return Ok(None);
        };
        self.t
            .regions
            .get(id_key(id))?
            .map(|bytes| decode_regions(&bytes, dim))
            .transpose()
    }

    /// Whether region queries are stored with photo `id`.
    pub fn has_region_queries(&self, id: PhotoId) -> Result<bool, IndexError> {
        Ok(self.t.regions.contains_key(id_key(id))?)
    }

    /// For every photo with region queries, the other photos among the `k` nearest of any
    /// of its queries, each with its best similarity, best first, in id order. Exact below
    /// [`super::SearchOptions::exact_below`] embeddings, else through the graph, as
    /// [`Store::knn_graph`].
    pub fn region_neighbours(&mut self, k: usize) -> Result<KnnGraph, IndexError> {
        let Some(dim) = self.dim()? else {
            return Ok(Vec::new());
        };
        let exact = self.embedding_count()? < self.opts.exact_below.max(1);
        let points: Vec<(PhotoId, Vec<f32>)> = if exact {
            self.embeddings().collect::<Result<_, _>>()?
        } else {
            self.ensure_ann()?;
            Vec::new()
        };
        let mut out = Vec::new();
        let mut batch = Vec::with_capacity(BATCH);
        for entry in self.t.regions.iter() {
            let (key, value) = entry?;
            batch.push((
                decode_u64_be(&key, "region id")?,
                decode_regions(&value, dim)?,
            ));
            if batch.len() == BATCH {
                out.extend(self.search_regions(&batch, k, &points));
                batch.clear();
            }
        }
        out.extend(self.search_regions(&batch, k, &points));
        out.sort_unstable_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// [`Store::region_neighbours`] of a batch of photos: against `points` when given
    /// (exact), else through the graph in memory.
    fn search_regions(
        &self,
        batch: &[(PhotoId, Vec<Vec<f32>>)],
        k: usize,
        points: &[(PhotoId, Vec<f32>)],
    ) -> KnnGraph {
        let nearest = |owner: PhotoId, query: &[f32]| -> Vec<(PhotoId, f32)> {
            match &self.ann {
                Some(st) if points.is_empty() => {
                    st.query(query, k, self.opts.ef_search, Some(owner))
                }
                _ => {
                    let mut top = TopK::new(k);
                    points
                        .iter()
                        .filter(|(id, _)| *id != owner)
                        .for_each(|(id, v)| top.push(*id, similarity(query, v)));
                    top.into_sorted()
                }
            }
        };
        batch
            .par_iter()
            .map(|(owner, queries)| {
                let mut best: HashMap<PhotoId, f32> = HashMap::new();
                for (id, sim) in queries.iter().flat_map(|q| nearest(*owner, q)) {
                    let slot = best.entry(id).or_insert(sim);
                    *slot = slot.max(sim);
                }
                let mut hits: Vec<(PhotoId, f32)> = best.into_iter().collect();
                hits.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                (*owner, hits)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PhotoRecord;
    use std::path::PathBuf;

    fn record(name: &str, byte: u8) -> PhotoRecord {
        PhotoRecord {
            path: PathBuf::from(format!("/photos/{name}.jpg")),
            size: 1,
            mtime_ns: 0,
            blake3: [byte; 32],
            width: 4,
            height: 4,
            taken_at: None,
            stats: None,
            perceptual_hash: None,
            padding: None,
        }
    }

    fn unit(v: [f32; 4]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Three photos: `a`'s second region query points at `c`, which its whole vector does
    /// not; searched exactly and through the graph, removal drops the queries.
    #[test]
    fn region_queries_find_the_photo_a_part_points_at_and_go_with_the_photo() {
        for exact_below in [1000, 0] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut store = Store::open(dir.path()).expect("open");
            let mut opts = store.options();
            opts.exact_below = exact_below;
            store.set_options(opts);
            store.set_model("m", 4).expect("model");
            let regions = vec![unit([0.0, 0.0, 1.0, 0.1]), unit([0.0, 0.0, 0.1, 1.0])];
            let a = store
                .put_with_regions(&record("a", 1), &unit([1.0, 0.0, 0.0, 0.0]), &regions)
                .expect("put a");
            let b = store
                .put(&record("b", 2), &unit([0.0, 0.0, 1.0, 0.0]))
                .expect("put b");
            let c = store
                .put(&record("c", 3), &unit([0.0, 0.0, 0.0, 1.0]))
                .expect("put c");
            assert!(store.has_region_queries(a).expect("read"));
            assert!(!store.has_region_queries(b).expect("read"));
            let stored = store.region_queries(a).expect("read").expect("stored");
            assert_eq!(stored.len(), 2);
            let graph = store.region_neighbours(1).expect("search");
            assert_eq!(graph.len(), 1, "only a has region queries");
            let (owner, hits) = &graph[0];
            let found: Vec<PhotoId> = hits.iter().map(|h| h.0).collect();
            assert_eq!((*owner, found.len()), (a, 2));
            assert!(found.contains(&b) && found.contains(&c), "{found:?}");
            store.remove(a).expect("remove");
            assert!(store.region_queries(a).expect("read").is_none());
            assert!(store.region_neighbours(1).expect("search").is_empty());
        }
    }

    #[test]
    fn a_query_of_another_width_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        store.set_model("m", 4).expect("model");
        let wrong = vec![vec![1.0, 0.0]];
        assert!(store
            .put_with_regions(&record("a", 1), &unit([1.0, 0.0, 0.0, 0.0]), &wrong)
            .is_err());
    }
}
