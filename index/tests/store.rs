//! The store's bookkeeping: records, indexes, failures, model changes, reopening.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::{hash, record, unit};
use dino_curate_index::{IndexError, Store};

type R = Result<(), Box<dyn std::error::Error>>;

const DIM: usize = 8;

fn open(dir: &Path) -> Result<Store, IndexError> {
    let s = Store::open(dir)?;
    s.set_model("m1", DIM)?;
    Ok(s)
}

#[test]
fn put_get_and_indexes() -> R {
    let dir = tempfile::tempdir()?;
    let s = open(dir.path())?;
    let a = s.put(&record("/p/a.jpg", 1), &unit(DIM, 1))?;
    let b = s.put(&record("/p/b.jpg", 2), &unit(DIM, 2))?;
    assert_ne!(a, b);
    assert_eq!(s.get(a)?, Some(record("/p/a.jpg", 1)));
    assert_eq!(
        s.get_by_path(Path::new("/p/b.jpg"))?,
        Some((b, record("/p/b.jpg", 2)))
    );
    assert_eq!(s.get_by_path(Path::new("/p/none.jpg"))?, None);
    assert_eq!(s.ids_by_hash(&hash(1))?, vec![a]);
    assert_eq!(s.embedding(a)?, Some(unit(DIM, 1)));
    // Same path again: same id, new vector, hash index follows.
    let a2 = s.put(&record("/p/a.jpg", 3), &unit(DIM, 3))?;
    assert_eq!(a2, a);
    assert_eq!(s.ids_by_hash(&hash(1))?, Vec::<u64>::new());
    assert_eq!(s.ids_by_hash(&hash(3))?, vec![a]);
    assert_eq!(s.embedding(a)?, Some(unit(DIM, 3)));
    let m = s.meta()?;
    assert_eq!(
        (m.photos, m.embeddings, m.dim, m.model_id.as_deref()),
        (2, 2, Some(DIM), Some("m1"))
    );
    // Copies: one hash, two ids.
    let c = s.put(&record("/p/c.jpg", 3), &unit(DIM, 3))?;
    let mut ids = s.ids_by_hash(&hash(3))?;
    ids.sort_unstable();
    assert_eq!(ids, vec![a, c]);
    Ok(())
}

#[test]
fn vectors_are_checked() -> R {
    let dir = tempfile::tempdir()?;
    let s = Store::open(dir.path())?;
    assert!(matches!(
        s.put(&record("/a", 1), &unit(DIM, 1)),
        Err(IndexError::NoModel)
    ));
    s.set_model("m1", DIM)?;
    assert!(matches!(
        s.put(&record("/a", 1), &unit(DIM + 1, 1)),
        Err(IndexError::Dimension {
            expected: DIM,
            got: 9
        })
    ));
    let mut v = unit(DIM, 1);
    v[3] = f32::NAN;
    assert!(matches!(
        s.put(&record("/a", 1), &v),
        Err(IndexError::NonFinite)
    ));
    assert_eq!(s.meta()?.photos, 0);
    Ok(())
}

#[test]
fn relocate_keeps_id_and_vector() -> R {
    let dir = tempfile::tempdir()?;
    let s = open(dir.path())?;
    let a = s.put(&record("/old/a.jpg", 1), &unit(DIM, 1))?;
    s.record_failure(Path::new("/new/a.jpg"), "was unreadable")?;
    s.relocate(a, &record("/new/a.jpg", 1))?;
    assert_eq!(s.get_by_path(Path::new("/old/a.jpg"))?, None);
    assert_eq!(
        s.get_by_path(Path::new("/new/a.jpg"))?.map(|x| x.0),
        Some(a)
    );
    assert_eq!(s.embedding(a)?, Some(unit(DIM, 1)));
    assert!(s.failures()?.is_empty());
    // Moving onto an indexed path replaces the photo that was there.
    let b = s.put(&record("/b.jpg", 2), &unit(DIM, 2))?;
    s.relocate(a, &record("/b.jpg", 1))?;
    assert_eq!(s.get(b)?, None);
    assert_eq!(s.embedding(b)?, None);
    assert_eq!(s.get_by_path(Path::new("/b.jpg"))?.map(|x| x.0), Some(a));
    assert_eq!(s.meta()?.photos, 1);
    assert_eq!(s.meta()?.embeddings, 1);
    assert!(matches!(
        s.relocate(999, &record("/x", 1)),
        Err(IndexError::NotFound(999))
    ));
    // Metadata-only update.
    let mut r = record("/b.jpg", 1);
    r.mtime_ns += 5;
    s.update_record(a, &r)?;
    assert_eq!(s.get(a)?, Some(r));
    assert_eq!(s.embedding(a)?, Some(unit(DIM, 1)));
    Ok(())
}

#[test]
fn remove_drops_everything() -> R {
    let dir = tempfile::tempdir()?;
    let s = open(dir.path())?;
    let a = s.put(&record("/a.jpg", 1), &unit(DIM, 1))?;
    s.remove(a)?;
    s.remove(a)?; // idempotent
    assert_eq!(s.get(a)?, None);
    assert_eq!(s.get_by_path(Path::new("/a.jpg"))?, None);
    assert!(s.ids_by_hash(&hash(1))?.is_empty());
    assert_eq!(s.embedding(a)?, None);
    assert_eq!((s.meta()?.photos, s.meta()?.embeddings), (0, 0));
    // Ids are not reused.
    let b = s.put(&record("/a.jpg", 1), &unit(DIM, 1))?;
    assert_ne!(a, b);
    Ok(())
}

#[test]
fn failures_round_trip() -> R {
    let dir = tempfile::tempdir()?;
    let s = open(dir.path())?;
    s.record_failure(Path::new("/bad.jpg"), "truncated JPEG")?;
    s.record_failure(Path::new("/bad2.heic"), "unsupported")?;
    assert_eq!(
        s.failures()?,
        vec![
            (PathBuf::from("/bad.jpg"), "truncated JPEG".to_string()),
            (PathBuf::from("/bad2.heic"), "unsupported".to_string())
        ]
    );
    s.clear_failure(Path::new("/bad2.heic"))?;
    s.put(&record("/bad.jpg", 1), &unit(DIM, 1))?;
    assert!(s.failures()?.is_empty());
    Ok(())
}

#[test]
fn model_change_drops_embeddings_and_reopen_reads_the_same() -> R {
    let dir = tempfile::tempdir()?;
    let (a, b);
    {
        let s = open(dir.path())?;
        assert!(!s.set_model("m1", DIM)?, "same model: nothing dropped");
        a = s.put(&record("/a.jpg", 1), &unit(DIM, 1))?;
        b = s.put(&record("/b.jpg", 2), &unit(DIM, 2))?;
        let generation = s.meta()?.ann_generation;
        assert!(s.set_model("m2", 4)?);
        let m = s.meta()?;
        assert_eq!((m.photos, m.embeddings, m.dim), (2, 0, Some(4)));
        assert_eq!(m.ann_generation, generation + 1);
        assert_eq!(s.ids_without_embedding()?, vec![a, b]);
        assert_eq!(s.embedding(a)?, None);
        assert_eq!(s.embeddings().count(), 0);
        s.put(&record("/a.jpg", 1), &unit(4, 9))?;
        assert_eq!(s.ids_without_embedding()?, vec![b]);
        s.flush()?;
    }
    let s = Store::open(dir.path())?;
    let m = s.meta()?;
    assert_eq!(
        (m.photos, m.embeddings, m.model_id.as_deref()),
        (2, 1, Some("m2"))
    );
    assert_eq!(s.get(b)?, Some(record("/b.jpg", 2)));
    assert_eq!(s.embedding(a)?, Some(unit(4, 9)));
    let all: Vec<_> = s.photos().collect::<Result<_, _>>()?;
    assert_eq!(
        all,
        vec![(a, record("/a.jpg", 1)), (b, record("/b.jpg", 2))]
    );
    Ok(())
}

#[test]
fn non_utf8_paths_round_trip() -> R {
    let dir = tempfile::tempdir()?;
    let s = open(dir.path())?;
    let path = PathBuf::from(OsStr::from_bytes(b"/photos/\xff\xfeLatin1 caf\xe9.jpg"));
    assert!(path.to_str().is_none());
    let mut r = record("/x", 1);
    r.path = path.clone();
    let id = s.put(&r, &unit(DIM, 1))?;
    assert_eq!(s.get_by_path(&path)?, Some((id, r.clone())));
    s.record_failure(&path, "why not")?;
    assert_eq!(s.failures()?[0].0, path);
    drop(s);
    let s = Store::open(dir.path())?;
    assert_eq!(s.get(id)?.map(|r| r.path), Some(path));
    Ok(())
}

#[test]
fn newer_schema_is_refused_with_a_clear_error() -> R {
    let dir = tempfile::tempdir()?;
    drop(open(dir.path())?);
    {
        let db = sled::open(dir.path().join("db"))?;
        db.open_tree("meta")?
            .insert("schema_version", &99u32.to_be_bytes())?;
        db.flush()?;
    }
    let err = Store::open(dir.path()).map(drop).err();
    assert!(
        matches!(
            err,
            Some(IndexError::NewerSchema {
                found: 99,
                supported: 3
            })
        ),
        "{err:?}"
    );
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("schema version 99") && msg.contains("newer"),
        "{msg}"
    );
    Ok(())
}

/// A store written by a binary of schema 1 opens and is marked 2, so that binary then
/// says "newer" instead of reading the records with a hash as corrupt.
#[test]
fn an_older_schema_is_upgraded_on_open() -> R {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    store.set_model("m", 2)?;
    let mut hashed = record("/p/a.jpg", 1);
    hashed.perceptual_hash = Some([7; 32]);
    let id = store.put(&hashed, &unit(2, 0))?;
    drop(store);
    let set_version = |v: Option<u32>| -> Result<Option<u32>, Box<dyn std::error::Error>> {
        let db = sled::open(dir.path().join("db"))?;
        let meta = db.open_tree("meta")?;
        if let Some(v) = v {
            meta.insert("schema_version", &v.to_be_bytes())?;
        }
        let now = meta.get("schema_version")?;
        db.flush()?;
        Ok(now.and_then(|b| <[u8; 4]>::try_from(b.as_ref()).ok().map(u32::from_be_bytes)))
    };
    // a store of version 3 keeps its hashes
    let store = open(dir.path())?;
    assert_eq!(
        store.get(id)?.ok_or("record")?.perceptual_hash,
        Some([7; 32])
    );
    drop(store);
    // version 2 held gradient hashes: dropped, so that `index` makes DCT hashes
    set_version(Some(2))?;
    let store = open(dir.path())?;
    assert_eq!(store.get(id)?.ok_or("record")?.perceptual_hash, None);
    assert_eq!(store.get(id)?.ok_or("record")?.path, hashed.path);
    drop(store);
    assert_eq!(set_version(None)?, Some(3));
    set_version(Some(1))?;
    drop(open(dir.path())?);
    assert_eq!(set_version(None)?, Some(3));
    Ok(())
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn a_store_in_use_is_a_clear_error_and_free_again_once_closed() -> R {
    let dir = tempfile::tempdir()?;
    let first = Store::open(dir.path())?;
    let err = Store::open(dir.path())
        .err()
        .ok_or("opened a locked store")?;
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    Store::open(dir.path())?;
    Ok(())
}
