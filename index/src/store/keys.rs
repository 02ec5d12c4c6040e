//! Keys of the meta tree and small typed accessors, inside and outside transactions.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::IndexError;

/// Layout version of the database; bump when the encoding of any tree changes.
/// 1: the first layout. 2: photo records carry the perceptual hash (records of the first
/// layout still read; a binary that knows only version 1 refuses the store as newer
/// instead of reading the new records as corrupt). 3: the perceptual hash is the
/// dihedral DCT sign hash; the gradient hashes of version 2 are dropped on upgrade.
pub(crate) const SCHEMA_VERSION: u32 = 3;

/// The first version whose records' perceptual hash is the DCT sign hash.
pub(crate) const DCT_HASH_SCHEMA: u32 = 3;

pub(crate) const SCHEMA: &[u8] = b"schema_version";
pub(crate) const MODEL_ID: &[u8] = b"model_id";
pub(crate) const DIM: &[u8] = b"dim";
pub(crate) const GENERATION: &[u8] = b"ann_generation";
/// Last embedding sequence number handed out (monotonic, never reused).
pub(crate) const EMB_SEQ: &[u8] = b"emb_seq";
/// Next photo id to hand out.
pub(crate) const NEXT_ID: &[u8] = b"next_id";
pub(crate) const PHOTO_COUNT: &[u8] = b"photo_count";
pub(crate) const EMB_COUNT: &[u8] = b"embedding_count";
/// Set, in the transaction that changes the model, until the old vectors are cleared.
pub(crate) const PURGE_PENDING: &[u8] = b"purge_pending";
/// bincode of the [`crate::ann::DumpRecord`] of the current HNSW dump.
pub(crate) const ANN_DUMP: &[u8] = b"ann_dump";
/// bincode of the [`crate::links::LinksRecord`] of the current dump's links file.
pub(crate) const ANN_LINKS: &[u8] = b"ann_links";

pub(crate) fn decode_u64(bytes: &[u8], key: &[u8]) -> Result<u64, IndexError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        IndexError::Corrupt(format!(
            "meta {}: {} bytes",
            String::from_utf8_lossy(key),
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// A `u64` meta value, 0 if absent.
pub(crate) fn get_u64(meta: &sled::Tree, key: &[u8]) -> Result<u64, IndexError> {
    meta.get(key)?.map_or(Ok(0), |v| decode_u64(&v, key))
}

pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<IndexError>>;

/// Aborts a transaction with `e`.
pub(crate) fn abort<T>(e: IndexError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// A `u64` meta value inside a transaction, 0 if absent.
pub(crate) fn tx_u64(meta: &TransactionalTree, key: &[u8]) -> TxResult<u64> {
    match meta.get(key)? {
        None => Ok(0),
        Some(v) => decode_u64(&v, key).or_else(abort),
    }
}

pub(crate) fn tx_set_u64(meta: &TransactionalTree, key: &[u8], v: u64) -> TxResult<()> {
    meta.insert(key, &v.to_be_bytes())?;
    Ok(())
}

/// Adds `delta` to a counter (saturating at 0).
pub(crate) fn tx_add(meta: &TransactionalTree, key: &[u8], delta: i64) -> TxResult<()> {
    let v = tx_u64(meta, key)?;
    tx_set_u64(meta, key, v.saturating_add_signed(delta))
}
