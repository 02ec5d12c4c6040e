//! Verification keypoints by content hash: bytes the binary computes from the pixels while
//! indexing and reads back when verifying near-duplicate pairs. Keyed by content, they
//! follow a photo through moves and serve all its exact copies.

use super::Store;
use crate::IndexError;

impl Store {
    /// Stores the keypoints of the content `blake3`, replacing any.
    pub fn put_keypoints(&self, blake3: &[u8; 32], bytes: &[u8]) -> Result<(), IndexError> {
        self.t.keypoints.insert(blake3, bytes)?;
        Ok(())
    }

    /// The keypoints of the content `blake3`, if stored.
    pub fn keypoints(&self, blake3: &[u8; 32]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.t.keypoints.get(blake3)?.map(|v| v.to_vec()))
    }

    /// Whether keypoints of the content `blake3` are stored.
    pub fn has_keypoints(&self, blake3: &[u8; 32]) -> Result<bool, IndexError> {
        Ok(self.t.keypoints.contains_key(blake3)?)
    }

    /// Drops the keypoints of contents no record has any more; returns how many went.
    pub fn prune_keypoints(&self) -> Result<usize, IndexError> {
        let mut gone = 0;
        for entry in self.t.keypoints.iter() {
            let (key, _) = entry?;
            let hash: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| IndexError::Corrupt("keypoints key".into()))?;
            if self.ids_by_hash(&hash)?.is_empty() {
                self.t.keypoints.remove(&key)?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypoints_are_stored_by_content_and_pruned_when_no_record_has_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let hash = [7u8; 32];
        assert!(!store.has_keypoints(&hash).expect("read"));
        store.put_keypoints(&hash, b"points").expect("write");
        assert_eq!(
            store.keypoints(&hash).expect("read").as_deref(),
            Some(&b"points"[..])
        );
        assert_eq!(store.prune_keypoints().expect("prune"), 1);
        assert!(store.keypoints(&hash).expect("read").is_none());
    }
}
