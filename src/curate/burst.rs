//! Bursts apart from copies: photos taken seconds apart that look nearly alike are shots
//! of one moment, not copies of one photo, and the user keeps the sharpest of them rather
//! than the largest.

use chrono::NaiveDateTime;

use dino_curate_index::PhotoRecord;

/// Longest time between the first and the last shot of a burst.
pub const BURST_SPAN_SECONDS: i64 = 10;

/// What a near-duplicate group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Copies of one photo (edited, re-encoded, resized, or the same file).
    Copy,
    /// Shots taken seconds apart.
    Burst,
}

impl GroupKind {
    /// The name `dups --json` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Copy => "copy",
            Self::Burst => "burst",
        }
    }
}

fn taken(r: &PhotoRecord) -> Option<NaiveDateTime> {
    parse_time(r.taken_at.as_deref()?)
}

fn parse_time(t: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").ok()
}

/// Whether the EXIF times of `a` and `b` say they are two moments, not one: both are timed,
/// more than [`BURST_SPAN_SECONDS`] apart. A copy keeps its original's time and the shots of
/// a burst are seconds apart, so such a pair is neither, however alike: a fixed camera's
/// frames line up by their background at every moment (docs/quality.md, real bursts).
pub fn other_moments(a: &PhotoRecord, b: &PhotoRecord) -> bool {
    times_apart(a.taken_at.as_deref(), b.taken_at.as_deref())
}

/// [`other_moments`] of two EXIF times as records store them (`YYYY-MM-DDTHH:MM:SS`).
pub fn times_apart(a: Option<&str>, b: Option<&str>) -> bool {
    match (a.and_then(parse_time), b.and_then(parse_time)) {
        (Some(x), Some(y)) => (x - y).num_seconds().abs() > BURST_SPAN_SECONDS,
        _ => false,
    }
}

/// A burst when every photo has an EXIF time, they span at most [`BURST_SPAN_SECONDS`],
/// at least two times differ (copies keep their original's time), no two photos are the
/// same file, and all have one size (one camera at one setting; an edited copy rarely
/// keeps the size). Otherwise copies.
pub fn group_kind(records: &[&PhotoRecord]) -> GroupKind {
    let Some(times) = records.iter().map(|r| taken(r)).collect::<Option<Vec<_>>>() else {
        return GroupKind::Copy;
    };
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        return GroupKind::Copy;
    };
    let span = (*last - *first).num_seconds();
    let one_size = records
        .iter()
        .all(|r| (r.width, r.height) == (records[0].width, records[0].height));
    let mut contents: Vec<[u8; 32]> = records.iter().map(|r| r.blake3).collect();
    contents.sort_unstable();
    contents.dedup();
    let distinct_files = contents.len() == records.len();
    if span > 0 && span <= BURST_SPAN_SECONDS && one_size && distinct_files {
        GroupKind::Burst
    } else {
        GroupKind::Copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(taken: Option<&str>, width: u32, content: u8) -> PhotoRecord {
        PhotoRecord {
            path: format!("/p/{content}.jpg").into(),
            size: 1,
            mtime_ns: 0,
            blake3: [content; 32],
            width,
            height: 100,
            taken_at: taken.map(str::to_owned),
            stats: None,
            perceptual_hash: None,
            padding: None,
        }
    }

    fn kind(shots: &[PhotoRecord]) -> GroupKind {
        group_kind(&shots.iter().collect::<Vec<_>>())
    }

    #[test]
    fn shots_seconds_apart_are_a_burst() {
        let a = shot(Some("2024-05-01T10:00:01"), 100, 1);
        let b = shot(Some("2024-05-01T10:00:03"), 100, 2);
        let c = shot(Some("2024-05-01T10:00:04"), 100, 3);
        assert_eq!(kind(&[a.clone(), b.clone(), c]), GroupKind::Burst);
        // across midnight too
        let late = shot(Some("2024-05-01T23:59:58"), 100, 4);
        let early = shot(Some("2024-05-02T00:00:02"), 100, 5);
        assert_eq!(kind(&[late, early]), GroupKind::Burst);
        assert_eq!(kind(&[a, b]), GroupKind::Burst);
    }

    #[test]
    fn photos_more_than_a_burst_apart_are_other_moments() {
        let a = shot(Some("2024-05-01T10:00:01"), 100, 1);
        let near = shot(Some("2024-05-01T10:00:11"), 100, 2);
        let far = shot(Some("2024-05-01T10:00:12"), 100, 3);
        let undated = shot(None, 100, 4);
        assert!(!other_moments(&a, &a), "a copy keeps its time");
        assert!(!other_moments(&a, &near) && !other_moments(&near, &a));
        assert!(other_moments(&a, &far) && other_moments(&far, &a));
        assert!(!other_moments(&a, &undated), "no time says nothing");
    }

    #[test]
    fn copies_stay_copies() {
        let a = shot(Some("2024-05-01T10:00:01"), 100, 1);
        let same_time = shot(Some("2024-05-01T10:00:01"), 100, 2);
        assert_eq!(
            kind(&[a.clone(), same_time]),
            GroupKind::Copy,
            "copy keeps the time"
        );
        let resized = shot(Some("2024-05-01T10:00:03"), 50, 2);
        assert_eq!(kind(&[a.clone(), resized]), GroupKind::Copy, "another size");
        let undated = shot(None, 100, 2);
        assert_eq!(kind(&[a.clone(), undated]), GroupKind::Copy);
        let later = shot(Some("2024-05-01T10:01:00"), 100, 2);
        assert_eq!(kind(&[a.clone(), later]), GroupKind::Copy, "a minute apart");
        let same_file = shot(Some("2024-05-01T10:00:02"), 100, 1);
        assert_eq!(kind(&[a, same_file]), GroupKind::Copy);
    }
}
