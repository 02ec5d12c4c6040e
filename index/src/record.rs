//! What is stored about a photo, and how it is laid out in the database.
//!
//! Keys: ids are big-endian `u64` (so trees iterate in id order), paths are the raw bytes of
//! the `OsStr` (any Unix path, UTF-8 or not). Records are bincode of a private mirror of
//! [`PhotoRecord`] holding the path as bytes (serde refuses non-UTF-8 `PathBuf`s). Vectors are
//! little-endian `f32`s.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::IndexError;

/// Identifier of a photo in the store; stable across moves and re-embedding.
pub type PhotoId = u64;

/// Every photo with its nearest neighbours `(id, cosine similarity)`, best first.
pub type KnnGraph = Vec<(PhotoId, Vec<(PhotoId, f32)>)>;

/// What the store knows about one photo file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoRecord {
    /// Where the file is.
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// blake3 hash of the file's bytes (recognises moved and copied files).
    pub blake3: [u8; 32],
    /// Upright width in pixels (EXIF orientation applied).
    pub width: u32,
    /// Upright height in pixels.
    pub height: u32,
    /// EXIF DateTimeOriginal as `YYYY-MM-DDTHH:MM:SS`, if known.
    pub taken_at: Option<String>,
    /// Cheap quality statistics computed while indexing.
    pub stats: Option<ImageStats>,
    /// 256-bit perceptual hash of the pixels (signs of DCT coefficients of the
    /// border-trimmed luma), for near-duplicates the model misses (colour edits, re-encodes,
    /// flips); absent in records written before it existed.
    pub perceptual_hash: Option<[u8; 32]>,
    /// Fraction of the picture's area in flat bands around it (letterbox or pillarbox bars,
    /// a frame): a copy with more of it than another is a padded copy. Absent in records
    /// written before it existed.
    pub padding: Option<f32>,
}

/// Cheap per-image quality statistics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageStats {
    /// Variance of the Laplacian of the luma (low = blurry).
    pub laplacian_var: f32,
    /// Mean luma in [0, 1].
    pub mean_luma: f32,
    /// Fraction of nearly black pixels.
    pub dark_fraction: f32,
    /// Fraction of nearly white pixels.
    pub bright_fraction: f32,
    /// Entropy of the luma histogram, in bits.
    pub entropy: f32,
}

/// A summary of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Layout version of the database.
    pub schema_version: u32,
    /// Dimension of the vectors, once a model is declared.
    pub dim: Option<usize>,
    /// Identifier of the model producing the vectors, once declared.
    pub model_id: Option<String>,
    /// Bumped whenever the ANN graph must be rebuilt from scratch (model change).
    pub ann_generation: u64,
    /// Number of photo records.
    pub photos: usize,
    /// Number of photos that have an embedding for the current model.
    pub embeddings: usize,
}

/// On-disk mirror of [`PhotoRecord`].
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    path: Vec<u8>,
    size: u64,
    mtime_ns: i128,
    blake3: [u8; 32],
    width: u32,
    height: u32,
    taken_at: Option<String>,
    stats: Option<ImageStats>,
}

/// The second layout: the first layout's fields, then the perceptual hash.
#[derive(Serialize, Deserialize)]
struct StoredRecordV2 {
    first: StoredRecord,
    perceptual_hash: Option<[u8; 32]>,
}

/// The current layout: the second layout's fields, then the padding.
#[derive(Serialize, Deserialize)]
struct StoredRecordV3 {
    second: StoredRecordV2,
    padding: Option<f32>,
}

/// Prefix of [`StoredRecordV2`] values: read as the first layout's path length it exceeds
/// the codec's size limit, so no record of the first layout starts with it.
const V2_PREFIX: [u8; 8] = [0xff; 8];

/// What follows [`V2_PREFIX`] in [`StoredRecordV3`] values: read as the second layout's
/// path length it exceeds the size limit too, so no record of the second layout has it.
const V3_MARK: [u8; 8] = [0xfe; 8];

/// The fields of `r` the first layout holds.
fn first_layout(r: &PhotoRecord) -> StoredRecord {
    StoredRecord {
        path: path_key(&r.path).to_vec(),
        size: r.size,
        mtime_ns: r.mtime_ns,
        blake3: r.blake3,
        width: r.width,
        height: r.height,
        taken_at: r.taken_at.clone(),
        stats: r.stats,
    }
}

pub(crate) fn encode_record(r: &PhotoRecord) -> Result<Vec<u8>, IndexError> {
    let stored = StoredRecordV3 {
        second: StoredRecordV2 {
            first: first_layout(r),
            perceptual_hash: r.perceptual_hash,
        },
        padding: r.padding,
    };
    let mut bytes = [V2_PREFIX, V3_MARK].concat();
    codec()
        .serialize_into(&mut bytes, &stored)
        .map_err(|e| IndexError::Corrupt(format!("encoding record: {e}")))?;
    Ok(bytes)
}

/// bincode with fixed-width integers and a size limit: a damaged length prefix in a stored
/// value yields an error, never a huge allocation.
pub(crate) fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(1 << 20)
}

/// Reads a record of any layout (records of the first one have no perceptual hash, those
/// of the first two no padding).
pub(crate) fn decode_record(bytes: &[u8]) -> Result<PhotoRecord, IndexError> {
    let corrupt = |e: bincode::Error| IndexError::Corrupt(format!("photo record: {e}"));
    let (s, perceptual_hash, padding) = match bytes.strip_prefix(&V2_PREFIX) {
        Some(rest) => match rest.strip_prefix(&V3_MARK) {
            Some(body) => {
                let v3: StoredRecordV3 = codec().deserialize(body).map_err(corrupt)?;
                (v3.second.first, v3.second.perceptual_hash, v3.padding)
            }
            None => {
                let v2: StoredRecordV2 = codec().deserialize(rest).map_err(corrupt)?;
                (v2.first, v2.perceptual_hash, None)
            }
        },
        None => (codec().deserialize(bytes).map_err(corrupt)?, None, None),
    };
    Ok(PhotoRecord {
        path: path_from_key(&s.path),
        size: s.size,
        mtime_ns: s.mtime_ns,
        blake3: s.blake3,
        width: s.width,
        height: s.height,
        taken_at: s.taken_at,
        stats: s.stats,
        perceptual_hash,
        padding,
    })
}

/// The raw bytes of a path, used as a key.
pub(crate) fn path_key(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

pub(crate) fn path_from_key(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

pub(crate) fn id_key(id: PhotoId) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn decode_u64_be(bytes: &[u8], what: &str) -> Result<u64, IndexError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        IndexError::Corrupt(format!("{what}: expected 8 bytes, found {}", bytes.len()))
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// Key of the hash index: blake3 followed by the id, so that one hash maps to many ids.
pub(crate) fn hash_key(blake3: &[u8; 32], id: PhotoId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(blake3);
    k[32..].copy_from_slice(&id.to_be_bytes());
    k
}

/// An embedding value: the ANN sequence number of this vector, then the vector.
pub(crate) fn encode_embedding(seq: u64, v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 * v.len());
    out.extend_from_slice(&seq.to_le_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The sequence number stored with an embedding.
pub(crate) fn embedding_seq(bytes: &[u8]) -> Result<u64, IndexError> {
    let head: [u8; 8] = bytes
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| IndexError::Corrupt("embedding value shorter than its header".into()))?;
    Ok(u64::from_le_bytes(head))
}

/// Decodes the vector part of an embedding value into `out` (cleared first).
pub(crate) fn embedding_vector_into(bytes: &[u8], out: &mut Vec<f32>) -> Result<(), IndexError> {
    let body = bytes
        .get(8..)
        .filter(|b| b.len() % 4 == 0)
        .ok_or_else(|| IndexError::Corrupt("embedding value of invalid length".into()))?;
    out.clear();
    out.extend(
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

pub(crate) fn decode_embedding(bytes: &[u8]) -> Result<(u64, Vec<f32>), IndexError> {
    let seq = embedding_seq(bytes)?;
    let mut v = Vec::new();
    embedding_vector_into(bytes, &mut v)?;
    Ok((seq, v))
}

/// A photo's region queries as stored: how many rows, how many leading components every
/// row has zero (a query on part of the vector, such as the GeM half of a CLS ⊕ GeM
/// descriptor; not stored), then the rest of each row as f16 (little-endian). Half
/// precision is ample for proposing candidates and halves the size.
pub(crate) fn encode_regions(rows: &[Vec<f32>]) -> Vec<u8> {
    let width = rows.first().map_or(0, Vec::len);
    let zeros = rows
        .iter()
        .map(|r| r.iter().take_while(|x| **x == 0.0).count())
        .min()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(8 + 2 * rows.len() * (width - zeros));
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    out.extend_from_slice(&(zeros as u32).to_le_bytes());
    for row in rows {
        for x in &row[zeros..] {
            out.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes());
        }
    }
    out
}

/// The rows of [`encode_regions`], each `dim` wide.
pub(crate) fn decode_regions(bytes: &[u8], dim: usize) -> Result<Vec<Vec<f32>>, IndexError> {
    let corrupt = || IndexError::Corrupt("region queries of invalid length".into());
    let word = |at: usize| -> Result<usize, IndexError> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        Ok(u32::from_le_bytes(b) as usize)
    };
    let (rows, zeros) = (word(0)?, word(4)?);
    let tail = dim.checked_sub(zeros).ok_or_else(corrupt)?;
    let body = &bytes[8..];
    if body.len() != 2 * rows * tail {
        return Err(corrupt());
    }
    Ok((0..rows)
        .map(|r| {
            let mut row = vec![0f32; zeros];
            row.extend(
                body[2 * r * tail..2 * (r + 1) * tail]
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            );
            row
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_queries_round_trip_in_half_precision_without_their_zero_prefix() {
        let rows = vec![
            vec![0.0, 0.0, 0.5, -0.25, 0.125],
            vec![0.0, 0.0, 0.0, 0.1, 0.3],
        ];
        let bytes = encode_regions(&rows);
        assert_eq!(
            bytes.len(),
            8 + 2 * 2 * 3,
            "the common zero prefix is not stored"
        );
        let back = decode_regions(&bytes, 5).expect("decodes");
        for (a, b) in rows.iter().flatten().zip(back.iter().flatten()) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        assert!(
            decode_regions(&bytes, 4).is_err(),
            "another width is corrupt"
        );
        assert!(decode_regions(&bytes[..9], 5).is_err());
        assert!(decode_regions(&encode_regions(&[]), 5)
            .expect("none")
            .is_empty());
    }

    fn sample() -> PhotoRecord {
        PhotoRecord {
            path: PathBuf::from(OsStr::from_bytes(b"/photos/\xff\xfe caf\xc3\xa9.jpg")),
            size: 123_456,
            mtime_ns: -1_234_567_890_123_456_789_012,
            blake3: [7; 32],
            width: 4032,
            height: 3024,
            taken_at: Some("2024-05-01T10:11:12".into()),
            stats: Some(ImageStats {
                laplacian_var: 1.5,
                mean_luma: 0.4,
                dark_fraction: 0.01,
                bright_fraction: 0.02,
                entropy: 7.1,
            }),
            perceptual_hash: Some([0x5a; 32]),
            padding: Some(0.25),
        }
    }

    #[test]
    fn records_of_the_first_layout_still_read_without_a_hash() -> Result<(), IndexError> {
        let r = sample();
        let old_bytes = codec()
            .serialize(&first_layout(&r))
            .map_err(|e| IndexError::Corrupt(e.to_string()))?;
        let read = decode_record(&old_bytes)?;
        assert_eq!(read.perceptual_hash, None);
        assert_eq!(
            read,
            PhotoRecord {
                perceptual_hash: None,
                padding: None,
                ..r
            }
        );
        Ok(())
    }

    #[test]
    fn records_of_the_second_layout_still_read_without_padding() -> Result<(), IndexError> {
        let r = sample();
        let second = StoredRecordV2 {
            first: first_layout(&r),
            perceptual_hash: r.perceptual_hash,
        };
        let mut old_bytes = V2_PREFIX.to_vec();
        codec()
            .serialize_into(&mut old_bytes, &second)
            .map_err(|e| IndexError::Corrupt(e.to_string()))?;
        let read = decode_record(&old_bytes)?;
        assert_eq!(read, PhotoRecord { padding: None, ..r });
        Ok(())
    }

    #[test]
    fn record_round_trip_with_non_utf8_path() -> Result<(), IndexError> {
        let r = sample();
        assert!(r.path.to_str().is_none());
        assert_eq!(decode_record(&encode_record(&r)?)?, r);
        Ok(())
    }

    #[test]
    fn truncated_record_is_an_error_not_a_panic() -> Result<(), IndexError> {
        let bytes = encode_record(&sample())?;
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes[..cut]).is_err());
        }
        Ok(())
    }

    #[test]
    fn embedding_round_trip_and_bad_lengths() -> Result<(), IndexError> {
        let v = vec![0.5f32, -0.25, 1e-7];
        let bytes = encode_embedding(42, &v);
        assert_eq!(decode_embedding(&bytes)?, (42, v));
        assert!(decode_embedding(&bytes[..7]).is_err());
        assert!(decode_embedding(&bytes[..bytes.len() - 1]).is_err());
        Ok(())
    }
}
