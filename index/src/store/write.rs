//! Writes. Each public write is one sled transaction over all the trees it touches, so a
//! crash leaves either all of it or none: never a vector without a record, a path pointing
//! nowhere, or two records for one path.

use std::path::Path;

use sled::transaction::TransactionalTree;
use sled::Transactional;

use super::keys::{abort, tx_add, tx_set_u64, tx_u64, TxResult};
use super::{keys, Store};
use crate::record::{
    decode_record, decode_u64_be, embedding_seq, encode_embedding, encode_record, encode_regions,
    hash_key, id_key, path_key,
};
use crate::{IndexError, PhotoId, PhotoRecord};

/// The trees as seen inside a transaction.
struct Tx<'a> {
    photos: &'a TransactionalTree,
    paths: &'a TransactionalTree,
    hashes: &'a TransactionalTree,
    embeddings: &'a TransactionalTree,
    ann_points: &'a TransactionalTree,
    regions: &'a TransactionalTree,
    failures: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

/// Checks a vector against the declared dimension.
pub(super) fn check_vector(v: &[f32], dim: Option<usize>) -> Result<(), IndexError> {
    let dim = dim.ok_or(IndexError::NoModel)?;
    if v.len() != dim {
        return Err(IndexError::Dimension {
            expected: dim,
            got: v.len(),
        });
    }
    if !v.iter().all(|x| x.is_finite()) {
        return Err(IndexError::NonFinite);
    }
    Ok(())
}

impl Store {
    fn tx<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<R, IndexError> {
        let t = &self.t;
        let trees = (
            &t.photos,
            &t.paths,
            &t.hashes,
            &t.embeddings,
            &t.ann_points,
            &t.regions,
            &t.failures,
            &t.meta,
        );
        let r = trees.transaction(
            |(photos, paths, hashes, embeddings, ann_points, regions, failures, meta)| {
                f(&Tx {
                    photos,
                    paths,
                    hashes,
                    embeddings,
                    ann_points,
                    regions,
                    failures,
                    meta,
                })
            },
        )?;
        self.bump();
        Ok(r)
    }

    /// Inserts or replaces the record at `record.path` (same id if the path is known), with
    /// its embedding, in one transaction; clears a failure for that path.
    pub fn put(&self, record: &PhotoRecord, embedding: &[f32]) -> Result<PhotoId, IndexError> {
        self.put_with_regions(record, embedding, &[])
    }

    /// [`Store::put`] with the photo's region queries (each as wide as the embedding;
    /// none: the photo has none), which replace any stored before.
    pub fn put_with_regions(
        &self,
        record: &PhotoRecord,
        embedding: &[f32],
        regions: &[Vec<f32>],
    ) -> Result<PhotoId, IndexError> {
        let _shared = self.model_lock.read().unwrap_or_else(|p| p.into_inner());
        let dim = self.dim()?;
        check_vector(embedding, dim)?;
        for region in regions {
            check_vector(region, dim)?;
        }
        let regions = (!regions.is_empty()).then(|| encode_regions(regions));
        let rec = encode_record(record)?;
        let pk = path_key(&record.path);
        self.tx(|t| {
            let id = match t.paths.get(pk)? {
                Some(id) => decode_u64_be(&id, "path index").or_else(abort)?,
                None => {
                    let id = tx_u64(t.meta, keys::NEXT_ID)?;
                    tx_set_u64(t.meta, keys::NEXT_ID, id + 1)?;
                    id
                }
            };
            let key = id_key(id);
            match t.photos.get(key)? {
                Some(old) => {
                    let old = decode_record(&old).or_else(abort)?;
                    t.hashes.remove(&hash_key(&old.blake3, id)[..])?;
                }
                None => tx_add(t.meta, keys::PHOTO_COUNT, 1)?,
            }
            match t.embeddings.get(key)? {
                Some(old) => {
                    let seq = embedding_seq(&old).or_else(abort)?;
                    t.ann_points.remove(&seq.to_be_bytes()[..])?;
                }
                None => tx_add(t.meta, keys::EMB_COUNT, 1)?,
            }
            let seq = tx_u64(t.meta, keys::EMB_SEQ)? + 1;
            tx_set_u64(t.meta, keys::EMB_SEQ, seq)?;
            t.photos.insert(&key[..], rec.as_slice())?;
            t.paths.insert(pk, &key[..])?;
            t.hashes
                .insert(&hash_key(&record.blake3, id)[..], &[][..])?;
            t.embeddings
                .insert(&key[..], encode_embedding(seq, embedding))?;
            t.ann_points.insert(&seq.to_be_bytes()[..], &key[..])?;
            match &regions {
                Some(bytes) => t.regions.insert(&key[..], bytes.as_slice())?,
                None => t.regions.remove(&key[..])?,
            };
            t.failures.remove(pk)?;
            Ok(id)
        })
    }

    /// The photo `id` now lives at `new.path` (a move or rename recognised by its hash): keeps
    /// the id and its vector, updates the path index, in one transaction. A record that
    /// occupied `new.path` under another id is removed (the file there was replaced).
    pub fn relocate(&self, id: PhotoId, new: &PhotoRecord) -> Result<(), IndexError> {
        self.rewrite(id, new)
    }

    /// Replaces the metadata of photo `id` (e.g. its mtime changed but its hash did not),
    /// keeping its vector. A changed path is handled as by [`Store::relocate`].
    pub fn update_record(&self, id: PhotoId, record: &PhotoRecord) -> Result<(), IndexError> {
        self.rewrite(id, record)
    }

    fn rewrite(&self, id: PhotoId, new: &PhotoRecord) -> Result<(), IndexError> {
        let _shared = self.model_lock.read().unwrap_or_else(|p| p.into_inner());
        let rec = encode_record(new)?;
        let key = id_key(id);
        let new_pk = path_key(&new.path);
        self.tx(|t| {
            let Some(old) = t.photos.get(key)? else {
                return abort(IndexError::NotFound(id));
            };
            let old = decode_record(&old).or_else(abort)?;
            if old.path != new.path {
                let old_pk = path_key(&old.path);
                if t.paths.get(old_pk)?.as_deref() == Some(&key[..]) {
                    t.paths.remove(old_pk)?;
                }
                if let Some(other) = t.paths.get(new_pk)? {
                    let other = decode_u64_be(&other, "path index").or_else(abort)?;
                    if other != id {
                        remove_in(t, other)?;
                    }
                }
                t.paths.insert(new_pk, &key[..])?;
                t.failures.remove(new_pk)?;
            }
            if old.blake3 != new.blake3 {
                t.hashes.remove(&hash_key(&old.blake3, id)[..])?;
                t.hashes.insert(&hash_key(&new.blake3, id)[..], &[][..])?;
            }
            t.photos.insert(&key[..], rec.as_slice())?;
            Ok(())
        })
    }

    /// Removes photo `id`: record, path and hash entries and embedding, in one transaction;
    /// its graph point becomes a tombstone. Removing an unknown id does nothing.
    pub fn remove(&self, id: PhotoId) -> Result<(), IndexError> {
        let _shared = self.model_lock.read().unwrap_or_else(|p| p.into_inner());
        self.tx(|t| remove_in(t, id).map(drop))
    }

    /// Notes that `path` could not be indexed, and why.
    pub fn record_failure(&self, path: &Path, reason: &str) -> Result<(), IndexError> {
        self.t.failures.insert(path_key(path), reason.as_bytes())?;
        Ok(())
    }

    /// Forgets the failure noted for `path`, if any.
    pub fn clear_failure(&self, path: &Path) -> Result<(), IndexError> {
        self.t.failures.remove(path_key(path))?;
        Ok(())
    }
}

/// Removes photo `id` inside a transaction; false if there was no such photo.
fn remove_in(t: &Tx<'_>, id: PhotoId) -> TxResult<bool> {
    let key = id_key(id);
    let Some(old) = t.photos.remove(&key[..])? else {
        return Ok(false);
    };
    let old = decode_record(&old).or_else(abort)?;
    let pk = path_key(&old.path);
    if t.paths.get(pk)?.as_deref() == Some(&key[..]) {
        t.paths.remove(pk)?;
    }
    t.hashes.remove(&hash_key(&old.blake3, id)[..])?;
    if let Some(e) = t.embeddings.remove(&key[..])? {
        let seq = embedding_seq(&e).or_else(abort)?;
        t.ann_points.remove(&seq.to_be_bytes()[..])?;
        tx_add(t.meta, keys::EMB_COUNT, -1)?;
    }
    t.regions.remove(&key[..])?;
    tx_add(t.meta, keys::PHOTO_COUNT, -1)?;
    Ok(true)
}
