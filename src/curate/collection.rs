//! The indexed collection in memory for curation: every record and vector read once from
//! the store, and the results of the curation functions named by photo.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use dino_curate_index::{PhotoId, PhotoRecord, Store};
use rayon::prelude::*;

use super::burst::{group_kind, other_moments, GroupKind};
use super::clusters::{kmeans, Cluster};
use super::dups::{
    evidence_by_row, graph_pairs, group_links, hash_links, links, DupRule, Evidence,
    KeypointLookup, Link, Signals, HASH_SCAN_LIMIT, KEYPOINT_PARTNERS, KEYPOINT_SCAN_LIMIT,
    MIN_SHARED_KEYS,
};
use super::keeper::{choose_keeper_framed, framed_copies, KeepRule};
use super::select::{diverse_subset, outliers};
use super::vectors::{dot, normalize, Vectors};
use super::Neighbours;
use crate::phash::DihedralHash;
use crate::photo::has_raw_extension;
use crate::verify::{shared_keypoint_pairs, Keypoints};
use crate::{Error, Result};

/// Records and vectors of the indexed photos.
#[derive(Debug)]
pub struct Collection {
    /// The vectors, one row per photo that has one.
    pub vectors: Vectors,
    /// Every record, by id.
    pub records: HashMap<PhotoId, PhotoRecord>,
}

/// One near-duplicate group: its kind, the keeper and the others.
#[derive(Debug, Clone, PartialEq)]
pub struct DupGroup {
    /// Copies of one photo, or a burst of shots seconds apart.
    pub kind: GroupKind,
    /// The photo to keep.
    pub keep: PhotoId,
    /// The others, most similar to the keeper first.
    pub members: Vec<DupMember>,
}

/// A photo of a group besides its keeper, and why it is in the group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DupMember {
    /// The photo.
    pub id: PhotoId,
    /// Descriptor similarity (cosine) to the keeper.
    pub similarity: f32,
    /// Its most confident link inside the group.
    pub evidence: Evidence,
    /// That link's score (1 for exact, the hash agreement, or the cosine).
    pub score: f32,
    /// That link's keypoint inliers, if it was verified (else 0).
    pub inliers: u32,
    /// The photo at the other end of that link (the keeper or another member).
    pub linked_to: PhotoId,
}

impl Collection {
    /// Reads the store; fails with a clear message when nothing is indexed.
    pub fn load(store: &Store) -> Result<Self> {
        let meta = store.meta()?;
        let mut vectors = Vectors::with_capacity(meta.dim.unwrap_or(0), meta.embeddings);
        for entry in store.embeddings() {
            let (id, v) = entry?;
            vectors.push(id, &v);
        }
        let mut records = HashMap::new();
        for entry in store.photos() {
            let (id, r) = entry?;
            records.insert(id, r);
        }
        if vectors.is_empty() {
            return Err(Error::Config(
                "the index is empty: run `dino-curate index` first".into(),
            ));
        }
        Ok(Self { vectors, records })
    }

    /// The same collection with every vector minus the collection's mean direction,
    /// renormalised. Features learned on one small collection share a large common
    /// component (every cosine similarity is high); removing it spreads the similarities.
    /// On the near-duplicate benchmark it finds fewer copies at precision 0.99 than the
    /// raw CLS ⊕ GeM vectors (docs/quality.md), so `dups` uses it only on request.
    pub fn centred(mut self) -> Self {
        let (n, dim) = (self.vectors.len(), self.vectors.dim());
        let mut mean = vec![0f32; dim];
        for i in 0..n {
            mean.iter_mut()
                .zip(self.vectors.row(i))
                .for_each(|(m, x)| *m += x);
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f32);
        let mut centred = Vectors::new(dim);
        for i in 0..n {
            let mut v: Vec<f32> = self
                .vectors
                .row(i)
                .iter()
                .zip(&mean)
                .map(|(x, m)| x - m)
                .collect();
            normalize(&mut v);
            centred.push(self.vectors.id(i), &v);
        }
        self.vectors = centred;
        self
    }

    /// The k-NN graph with similarities recomputed on this collection's vectors (for
    /// instance after [`Collection::centred`]).
    pub fn rescore(&self, knn: &[(PhotoId, Neighbours)]) -> Vec<(PhotoId, Neighbours)> {
        let rows = self.row_of();
        knn.iter()
            .filter_map(|(id, hits)| {
                let a = self.vectors.row(*rows.get(id)?);
                let hits = hits
                    .iter()
                    .filter_map(|(o, _)| Some((*o, dot(a, self.vectors.row(*rows.get(o)?)))))
                    .collect();
                Some((*id, hits))
            })
            .collect()
    }

    fn row_of(&self) -> HashMap<PhotoId, usize> {
        self.vectors
            .ids()
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect()
    }

    /// Each vector row's perceptual hash with its flips and turns, if its record has one.
    fn dihedral_hashes(&self) -> Vec<Option<DihedralHash>> {
        self.vectors
            .ids()
            .iter()
            .map(|id| {
                let record = self.records.get(id)?;
                record.perceptual_hash.as_ref().map(DihedralHash::new)
            })
            .collect()
    }

    /// How many photos have no verification keypoints in `store`.
    pub fn without_keypoints(&self, store: &Store) -> Result<usize> {
        let mut missing = 0;
        for record in self.records.values() {
            missing += usize::from(!store.has_keypoints(&record.blake3)?);
        }
        Ok(missing)
    }

    /// The verification keypoints of row `row`, from `store` (None: not stored or not
    /// readable; that photo is then not verified).
    fn stored_keypoints(&self, store: &Store, row: usize) -> Option<Keypoints> {
        let record = self.records.get(&self.vectors.id(row))?;
        let bytes = store.keypoints(&record.blake3).ok()??;
        Keypoints::from_bytes(&bytes)
    }

    /// Groups of photos with the same content: the same content hash, or a camera RAW
    /// file and the JPEG (or HEIC) the camera wrote beside it (same folder, same name).
    pub fn exact_copies(&self) -> Vec<Vec<PhotoId>> {
        // sorted pairs, not a map of lists: a million photos, each its own group, cost
        // 40 MB this way against ~90 MB (issue 26, `dups` memory)
        let mut by_hash: Vec<([u8; 32], PhotoId)> =
            self.records.iter().map(|(&id, r)| (r.blake3, id)).collect();
        by_hash.sort_unstable();
        let mut groups: Vec<Vec<PhotoId>> = by_hash
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|run| run.len() > 1)
            .map(|run| run.iter().map(|&(_, id)| id).collect())
            .chain(self.raw_twins())
            .map(|mut g: Vec<PhotoId>| {
                g.sort_unstable();
                g
            })
            .collect();
        groups.sort_unstable();
        groups
    }

    /// RAW files with the other files of the same name in the same folder (IMG_1.CR2 and
    /// IMG_1.JPG): the camera's two records of one shot. Only the RAW files' shots are
    /// kept while the others are matched against them.
    fn raw_twins(&self) -> Vec<Vec<PhotoId>> {
        fn shot_of(path: &Path) -> Option<(&Path, String)> {
            let stem = path.file_stem()?.to_string_lossy().to_lowercase();
            Some((path.parent()?, stem))
        }
        let mut by_shot: HashMap<(&Path, String), Vec<PhotoId>> = (self.records.values())
            .filter(|r| has_raw_extension(&r.path))
            .filter_map(|r| Some((shot_of(&r.path)?, Vec::new())))
            .collect();
        if by_shot.is_empty() {
            return Vec::new();
        }
        for (&id, r) in &self.records {
            if let Some(ids) = shot_of(&r.path).and_then(|shot| by_shot.get_mut(&shot)) {
                ids.push(id);
            }
        }
        by_shot.into_values().filter(|ids| ids.len() > 1).collect()
    }

    /// `dups` as the CLI and the TUI run it: near-duplicate groups from the store's k-NN
    /// graph, on the vectors as stored or, with `centre`, on [`Collection::centred`] ones
    /// (`knn` rescored to match, in place), verifying with the keypoints in `store`.
    /// Returns the collection the groups were measured on.
    pub fn duplicates_from_graph(
        self,
        knn: &mut Vec<(PhotoId, Neighbours)>,
        centre: bool,
        rule: &DupRule,
        keep: &KeepRule,
        store: Option<&Store>,
    ) -> (Self, Vec<DupGroup>) {
        let collection = if centre {
            let centred = self.centred();
            *knn = centred.rescore(knn);
            centred
        } else {
            self
        };
        let groups = collection.duplicates(knn, rule, keep, store);
        (collection, groups)
    }

    /// Near-duplicate groups from the k-NN graph `knn` and, when the rule counts them,
    /// matching perceptual hashes and pairs verified with the keypoints in `store`, each
    /// with its kind, keeper and evidence.
    pub fn duplicates(
        &self,
        knn: &[(PhotoId, Neighbours)],
        rule: &DupRule,
        keep: &KeepRule,
        store: Option<&Store>,
    ) -> Vec<DupGroup> {
        let rows = self.row_of();
        let hashes = self.dihedral_hashes();
        let read: Vec<OnceLock<Option<Arc<Keypoints>>>> =
            (0..self.vectors.len()).map(|_| OnceLock::new()).collect();
        let lookup = |row: usize| {
            read.get(row)?
                .get_or_init(|| self.stored_keypoints(store?, row).map(Arc::new))
                .clone()
        };
        let signals = Signals {
            vectors: &self.vectors,
            hashes: &hashes,
            keypoints: store.map(|_| &lookup as KeypointLookup),
        };
        let exact: Vec<Vec<usize>> = self
            .exact_copies()
            .iter()
            .map(|g| g.iter().filter_map(|id| rows.get(id).copied()).collect())
            .collect();
        let mut candidates = graph_pairs(&rows, knn);
        if let Some(min) = rule
            .hash_candidate_agreement()
            .filter(|_| self.scans_all_hashes())
        {
            candidates.extend(hash_links(&hashes, min));
        }
        if signals.keypoints.is_some() && rule.min_inliers.is_some() && self.keys_all_keypoints() {
            let all: Vec<Option<Arc<Keypoints>>> = (0..self.vectors.len())
                .into_par_iter()
                .map(lookup)
                .collect();
            let refs: Vec<Option<&Keypoints>> = all.iter().map(Option::as_deref).collect();
            candidates.extend(shared_keypoint_pairs(
                &refs,
                KEYPOINT_PARTNERS,
                MIN_SHARED_KEYS,
            ));
        }
        // photos of two moments are never linked: not verified either
        candidates.retain(|&(a, b)| !self.other_moments(a, b));
        let links = links(&signals, &exact, candidates, rule);
        let groups = group_links(&signals, &links, rule);
        let best = evidence_by_row(&groups, &links, self.vectors.len());
        let mut out: Vec<DupGroup> = groups
            .par_iter()
            .filter_map(|group| self.describe_group(group, &best, &signals, keep))
            .collect();
        out.sort_by(|a, b| {
            b.members
                .len()
                .cmp(&a.members.len())
                .then(a.keep.cmp(&b.keep))
        });
        out
    }

    /// Whether rows `a` and `b` were taken at two moments ([`other_moments`]): their link
    /// makes neither a copy nor a burst.
    fn other_moments(&self, a: usize, b: usize) -> bool {
        let record = |row: usize| self.records.get(&self.vectors.id(row));
        match (record(a), record(b)) {
            (Some(x), Some(y)) => other_moments(x, y),
            _ => false,
        }
    }

    /// Whether `dups` keys every photo's keypoints here for candidates that share them: true
    /// up to [`KEYPOINT_SCAN_LIMIT`] photos.
    pub fn keys_all_keypoints(&self) -> bool {
        self.vectors.len() <= KEYPOINT_SCAN_LIMIT
    }

    /// Whether `dups` compares every pair of hashes here (else only the k-NN graph's pairs):
    /// true up to [`HASH_SCAN_LIMIT`] photos.
    pub fn scans_all_hashes(&self) -> bool {
        self.vectors.len() <= HASH_SCAN_LIMIT
    }

    /// A group of rows as the user sees it: kind, keeper, members with their evidence.
    fn describe_group(
        &self,
        group: &[usize],
        best: &[Option<Link>],
        signals: &Signals,
        keep: &KeepRule,
    ) -> Option<DupGroup> {
        let ids: Vec<PhotoId> = group.iter().map(|&r| self.vectors.id(r)).collect();
        let recs: Vec<&PhotoRecord> = ids.iter().filter_map(|id| self.records.get(id)).collect();
        if recs.len() != ids.len() {
            return None;
        }
        let kind = group_kind(&recs);
        let rule = keep.for_kind(kind);
        let edited = match (&rule, signals.keypoints) {
            (KeepRule::Auto, Some(lookup)) => {
                let keypoints: Vec<Option<Arc<Keypoints>>> =
                    group.iter().map(|&r| lookup(r)).collect();
                let borrowed: Vec<Option<&Keypoints>> =
                    keypoints.iter().map(Option::as_deref).collect();
                framed_copies(&recs, &borrowed)
            }
            _ => Vec::new(),
        };
        let keeper = *group.get(choose_keeper_framed(&recs, &rule, &edited)?)?;
        let mut members: Vec<DupMember> = group
            .iter()
            .filter(|&&r| r != keeper)
            .filter_map(|&r| {
                let link = best[r]?;
                let other = if link.a == r { link.b } else { link.a };
                Some(DupMember {
                    id: self.vectors.id(r),
                    similarity: signals.cosine(keeper, r),
                    evidence: link.evidence,
                    score: link.score,
                    inliers: link.inliers,
                    linked_to: self.vectors.id(other),
                })
            })
            .collect();
        members.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then(a.id.cmp(&b.id)));
        Some(DupGroup {
            kind,
            keep: self.vectors.id(keeper),
            members,
        })
    }

    /// Clusters as photo ids (see [`kmeans`]).
    pub fn clusters(&self, k: usize, seed: u64) -> Vec<(Cluster, Vec<PhotoId>)> {
        kmeans(&self.vectors, k, 50, seed)
            .into_iter()
            .map(|c| {
                let ids = c.rows.iter().map(|&r| self.vectors.id(r)).collect();
                (c, ids)
            })
            .collect()
    }

    /// The `n` photos least similar to their neighbours in `knn`, with their mean
    /// similarity, lowest first.
    pub fn outliers(&self, knn: &[(PhotoId, Neighbours)], n: usize) -> Vec<(PhotoId, f32)> {
        let sims: Vec<Vec<f32>> = knn
            .iter()
            .map(|(_, hits)| hits.iter().map(|h| h.1).collect())
            .collect();
        outliers(&sims, n)
            .into_iter()
            .map(|(i, s)| (knn[i].0, s))
            .collect()
    }

    /// A diverse subset of `n` photos (greedy k-center), each with its similarity to the
    /// nearest photo chosen before it.
    pub fn diverse(&self, n: usize) -> Vec<(PhotoId, f32)> {
        diverse_subset(&self.vectors, n)
            .into_iter()
            .map(|(r, s)| (self.vectors.id(r), s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use dino_curate_index::PhotoRecord;

    use super::Collection;
    use crate::curate::burst::GroupKind;
    use crate::curate::dups::DupRule;
    use crate::curate::keeper::KeepRule;
    use crate::curate::vectors::Vectors;

    fn record(path: &str, hash: u8) -> PhotoRecord {
        PhotoRecord {
            path: PathBuf::from(path),
            size: 1,
            mtime_ns: 0,
            blake3: [hash; 32],
            width: 10,
            height: 10,
            taken_at: None,
            stats: None,
            perceptual_hash: None,
            padding: None,
        }
    }

    #[test]
    fn raw_twins_and_same_content_are_exact_copies() {
        let records: HashMap<u64, PhotoRecord> = [
            (1, record("/p/IMG_1.CR2", 1)),
            (2, record("/p/IMG_1.jpg", 2)),
            (3, record("/p/IMG_2.jpg", 3)),
            (4, record("/p/IMG_2.png", 4)), // same name, no RAW: not a twin
            (5, record("/q/IMG_1.jpg", 5)), // another folder
            (6, record("/q/copy.jpg", 3)),  // IMG_2.jpg's content
        ]
        .into_iter()
        .collect();
        let collection = Collection {
            vectors: Vectors::new(4),
            records,
        };
        assert_eq!(collection.exact_copies(), vec![vec![1, 2], vec![3, 6]]);
    }

    /// The sample garden photo, its cropped copy and four others, with no neighbour lists
    /// and no hashes: only the keypoints they share can make the crop a candidate.
    #[test]
    fn a_crop_that_no_neighbour_list_holds_is_found_by_shared_keypoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dino_curate_index::Store::open(dir.path()).expect("store");
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/photos");
        let files = [
            "garden.jpg",
            "edited/garden-cropped.jpg",
            "dune.jpg",
            "ladybird.jpg",
            "storm.jpg",
            "aqua.jpg",
        ];
        let mut records = HashMap::new();
        let mut vectors = Vectors::new(files.len());
        for (i, file) in files.iter().enumerate() {
            let image = image::open(samples.join(file)).expect("sample").to_rgb8();
            let content = [i as u8 + 1; 32];
            let points = crate::verify::keypoints_of(&image).to_bytes();
            store.put_keypoints(&content, &points).expect("keypoints");
            let id = i as u64 + 1;
            records.insert(id, record(file, content[0]));
            let mut axis = vec![0.0; files.len()];
            axis[i] = 1.0;
            vectors.push(id, &axis);
        }
        let collection = Collection { vectors, records };
        let knn: Vec<(u64, Vec<(u64, f32)>)> = (1..=6).map(|id| (id, Vec::new())).collect();
        let rule = DupRule::with_threshold(0.995)
            .with_hash_agreement(Some(0.69))
            .with_verification(Some(16));
        let groups = collection.duplicates(&knn, &rule, &KeepRule::Auto, Some(&store));
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0].keep, 1, "the original is kept");
        let members: Vec<u64> = groups[0].members.iter().map(|m| m.id).collect();
        assert_eq!(members, vec![2]);
        assert_eq!(
            groups[0].members[0].evidence,
            crate::curate::dups::Evidence::Verified
        );
    }

    /// One scene shot at 10:00:00 and 10:00:02 (a burst), again five minutes later, and a
    /// smaller copy of that later shot with its time: every pair looks alike.
    #[test]
    fn shots_of_one_scene_at_two_moments_are_a_burst_and_copies_not_one_group() {
        let shot = |path: &str, content: u8, taken: &str, width: u32| PhotoRecord {
            taken_at: Some(taken.to_owned()),
            width,
            perceptual_hash: Some([0x5a; 32]),
            ..record(path, content)
        };
        let records: HashMap<u64, PhotoRecord> = [
            (1, shot("/p/a.jpg", 1, "2024-05-01T10:00:00", 10)),
            (2, shot("/p/b.jpg", 2, "2024-05-01T10:00:02", 10)),
            (3, shot("/p/c.jpg", 3, "2024-05-01T10:05:00", 10)),
            (4, shot("/p/c-small.jpg", 4, "2024-05-01T10:05:00", 5)),
        ]
        .into_iter()
        .collect();
        let mut vectors = Vectors::new(2);
        for id in 1..=4 {
            vectors.push(id, &[1.0, 0.0]);
        }
        let knn: Vec<(u64, Vec<(u64, f32)>)> = (1..=4)
            .map(|id| (id, (1..=4).filter(|&o| o != id).map(|o| (o, 1.0)).collect()))
            .collect();
        let collection = Collection { vectors, records };
        let rule = DupRule::with_threshold(0.995).with_hash_agreement(Some(0.69));
        let groups = collection.duplicates(&knn, &rule, &KeepRule::Auto, None);
        let mut found: Vec<(GroupKind, Vec<u64>)> = groups
            .iter()
            .map(|g| {
                let mut ids: Vec<u64> = g.members.iter().map(|m| m.id).collect();
                ids.push(g.keep);
                ids.sort_unstable();
                (g.kind, ids)
            })
            .collect();
        found.sort_by_key(|(_, ids)| ids.clone());
        assert_eq!(
            found,
            vec![
                (GroupKind::Burst, vec![1, 2]),
                (GroupKind::Copy, vec![3, 4])
            ]
        );
    }
}
