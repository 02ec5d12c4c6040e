//! The graph's bottom-layer links, written beside its dump, so that `dups` on a large
//! collection reads every photo's neighbours without loading the graph (whose points hold a
//! second copy of the vectors and their neighbour structures: 3× the vectors' memory).
//!
//! File `<basename>.hnsw.links` (little-endian): the magic `DCLINKS1`, then for each point of
//! the graph its sequence number (u64), its link count (u32) and that many links, each a
//! sequence number (u64) and a distance (f32), nearest first. Its length and CRC-32 are kept
//! in the meta tree with the dump's basename; a file whose record is missing or does not
//! match is never read.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ann::{bottom_links_of, checksum, Ann};
use crate::IndexError;

const MAGIC: &[u8; 8] = b"DCLINKS1";

/// More links than any graph this store builds keeps per point (2 × M, M ≤ 256).
const MAX_LINKS: u32 = 512;

/// What the meta tree remembers about the links file of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LinksRecord {
    /// Basename of the dump whose graph the links are of.
    pub basename: String,
    /// Length and CRC-32 of the file.
    pub file: (u64, u32),
}

/// The links file of dump `basename` in `dir`.
pub(crate) fn links_path(dir: &Path, basename: &str) -> PathBuf {
    dir.join(format!("{basename}.hnsw.links"))
}

/// Writes the bottom-layer links of every point of `ann`, nearest first, fsynced, and
/// describes the file. Point by point: collecting a million points' links first would hold
/// about a third of the vectors' memory while `index` dumps.
pub(crate) fn write_links(
    ann: &Ann,
    dir: &Path,
    basename: &str,
) -> Result<LinksRecord, IndexError> {
    let path = links_path(dir, basename);
    let io = |e| IndexError::io(&path, e);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(io)?);
    out.write_all(MAGIC).map_err(io)?;
    for point in ann.points() {
        let (seq, mut links) = (point.get_origin_id(), bottom_links_of(&point));
        links.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        out.write_all(&(seq as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&(links.len() as u32).to_le_bytes())
            .map_err(io)?;
        for (other, distance) in links {
            out.write_all(&(other as u64).to_le_bytes()).map_err(io)?;
            out.write_all(&distance.to_le_bytes()).map_err(io)?;
        }
    }
    out.into_inner()
        .map_err(|e| IndexError::io(&path, e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok(LinksRecord {
        basename: basename.to_owned(),
        file: checksum(&path, false)?,
    })
}

/// Whether the links file `record` describes is there, with the recorded length and CRC-32.
pub(crate) fn links_file_is_intact(dir: &Path, record: &LinksRecord) -> bool {
    checksum(&links_path(dir, &record.basename), false).is_ok_and(|found| found == record.file)
}

/// Calls `visit(seq, links)` for each point of the links file `record` describes, after
/// checking its length and checksum. `Ok(false)` when the file is missing, does not match
/// the record or is malformed (the caller then reads the graph itself).
pub(crate) fn read_links(
    dir: &Path,
    record: &LinksRecord,
    mut visit: impl FnMut(usize, &[(usize, f32)]),
) -> Result<bool, IndexError> {
    if !links_file_is_intact(dir, record) {
        return Ok(false);
    }
    let path = links_path(dir, &record.basename);
    let file = File::open(&path).map_err(|e| IndexError::io(&path, e))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if input.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(false);
    }
    let mut links = Vec::new();
    loop {
        let seq = match read_u64(&mut input) {
            Ok(seq) => seq as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(_) => return Ok(false),
        };
        let Ok(count) = read_u32(&mut input) else {
            return Ok(false);
        };
        if count > MAX_LINKS {
            return Ok(false);
        }
        links.clear();
        for _ in 0..count {
            let (Ok(other), Ok(distance)) = (read_u64(&mut input), read_u32(&mut input)) else {
                return Ok(false);
            };
            links.push((other as usize, f32::from_bits(distance)));
        }
        visit(seq, &links);
    }
}

fn read_u64(input: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(input: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ann::AnnParams;

    fn unit(seed: usize, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| (((seed * 31 + i * 17) % 97) as f32 / 97.0) - 0.5)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn graph(n: usize) -> Ann {
        let ann = Ann::new(AnnParams::default(), n);
        let vectors: Vec<Vec<f32>> = (0..n).map(|i| unit(i, 16)).collect();
        ann.insert(&vec![(vectors[0].as_slice(), 0)]);
        ann.insert(&(1..n).map(|i| (vectors[i].as_slice(), i)).collect());
        ann
    }

    #[test]
    fn links_read_back_are_the_graph_links_nearest_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ann = graph(300);
        let record = write_links(&ann, dir.path(), "g").expect("write");
        let mut read = Vec::new();
        let ok = read_links(dir.path(), &record, |seq, links| {
            read.push((seq, links.to_vec()))
        })
        .expect("read");
        assert!(ok);
        let mut expected = ann.bottom_links();
        for (_, links) in &mut expected {
            links.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        }
        expected.sort_by_key(|(s, _)| *s);
        read.sort_by_key(|(s, _)| *s);
        assert_eq!(read.len(), 300);
        assert_eq!(read, expected);
        assert!(read.iter().all(|(_, l)| !l.is_empty()));
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_not_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let record = write_links(&graph(50), dir.path(), "g").expect("write");
        let path = links_path(dir.path(), "g");
        let mut bytes = std::fs::read(&path).expect("read file");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("damage");
        let mut visits = 0;
        assert!(!read_links(dir.path(), &record, |_, _| visits += 1).expect("read"));
        assert_eq!(visits, 0, "a file failing its checksum is not read at all");
        // a well-formed file with the wrong record
        bytes.truncate(8 + 12 + 3);
        std::fs::write(&path, &bytes).expect("truncate");
        let truncated = LinksRecord {
            basename: "g".into(),
            file: checksum(&path, false).expect("checksum"),
        };
        assert!(!read_links(dir.path(), &truncated, |_, _| visits += 1).expect("read"));
        std::fs::remove_file(&path).expect("remove");
        assert!(!read_links(dir.path(), &record, |_, _| {}).expect("missing file"));
    }
}
