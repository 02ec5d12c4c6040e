//! Which photo of a duplicate group to keep.

use std::cmp::Ordering;
use std::path::PathBuf;

use dino_curate_index::PhotoRecord;

use super::burst::GroupKind;
use crate::verify::{framing, FramingEdit, Keypoints};

/// The rule naming a group's keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepRule {
    /// The default: of copies, the original over a copy the keypoints show to be a crop
    /// of it or its picture padded (letterbox, frame), then the largest, the sharpest, the
    /// oldest; of a burst, [`KeepRule::Sharpest`].
    Auto,
    /// Largest resolution, then largest file, then oldest.
    Largest,
    /// Sharpest (highest variance of the Laplacian), then the default order.
    Sharpest,
    /// Most recent (date taken, else modification time).
    Newest,
    /// Oldest (date taken, else modification time).
    Oldest,
    /// The first photo under this folder; the default rule breaks ties and applies when
    /// none is under it.
    PathPrefix(PathBuf),
}

impl std::str::FromStr for KeepRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "largest" => Ok(Self::Largest),
            "sharpest" => Ok(Self::Sharpest),
            "newest" => Ok(Self::Newest),
            "oldest" => Ok(Self::Oldest),
            _ => match s.strip_prefix("path:") {
                Some(prefix) if !prefix.is_empty() => Ok(Self::PathPrefix(prefix.into())),
                _ => Err(format!(
                    "unknown keep rule {s:?}: use auto, largest, sharpest, newest, oldest or path:PREFIX"
                )),
            },
        }
    }
}

impl KeepRule {
    /// The rule for a group of `kind`: [`KeepRule::Auto`] resolved for a burst, others as
    /// they are.
    pub fn for_kind(&self, kind: GroupKind) -> KeepRule {
        match (self, kind) {
            (Self::Auto, GroupKind::Burst) => Self::Sharpest,
            (rule, _) => rule.clone(),
        }
    }
}

/// Resolution in pixels.
fn pixels(r: &PhotoRecord) -> u64 {
    u64::from(r.width) * u64::from(r.height)
}

/// Variance of the Laplacian, 0 when unknown.
fn sharpness(r: &PhotoRecord) -> f32 {
    r.stats.map_or(0.0, |s| s.laplacian_var)
}

/// A sortable date: EXIF date taken when known (as text, which sorts chronologically),
/// else the modification time.
fn date_key(r: &PhotoRecord) -> (String, i128) {
    (r.taken_at.clone().unwrap_or_default(), r.mtime_ns)
}

/// Largest resolution, then largest file, then oldest, then path: `Less` = better keeper.
fn default_order(a: &PhotoRecord, b: &PhotoRecord) -> Ordering {
    pixels(b)
        .cmp(&pixels(a))
        .then(b.size.cmp(&a.size))
        .then(date_key(a).cmp(&date_key(b)))
        .then(a.path.cmp(&b.path))
}

/// A copy is sharper than another when its variance of the Laplacian is this many times
/// the other's: re-encoding the same picture moves it by less (JPEG noise adds a little).
pub const CLEARLY_SHARPER: f32 = 1.25;

/// `Less` when `a` is clearly sharper than `b` ([`CLEARLY_SHARPER`]), `Greater` when `b`
/// is, else `Equal`.
fn clearly_sharper(a: &PhotoRecord, b: &PhotoRecord) -> Ordering {
    let (sa, sb) = (sharpness(a), sharpness(b));
    if sa > CLEARLY_SHARPER * sb {
        Ordering::Less
    } else if sb > CLEARLY_SHARPER * sa {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// The copies' order of [`KeepRule::Auto`] once edited copies are set aside: largest
/// resolution, then clearly sharpest, then oldest, then largest file, then path.
fn copies_order(a: &PhotoRecord, b: &PhotoRecord) -> Ordering {
    pixels(b)
        .cmp(&pixels(a))
        .then_with(|| clearly_sharper(a, b))
        .then(date_key(a).cmp(&date_key(b)))
        .then(b.size.cmp(&a.size))
        .then(a.path.cmp(&b.path))
}

/// Most members of a group whose framing is compared pair by pair (the largest ones): a
/// pair costs one RANSAC.
pub const MAX_FRAMED: usize = 24;

/// A copy with this much more of its area in flat padding than another member (stored
/// [`PhotoRecord::padding`]) is a padded copy of it.
pub const MORE_PADDING: f32 = 0.03;

/// For each of a group's `records` (with their `keypoints`, `None` where not stored),
/// whether it is an edited copy of another member: its stored padding is larger by
/// [`MORE_PADDING`], or the keypoints show it to be a crop of the other, the other's whole
/// picture with flat padding around it, or (at one size) the other's picture with marks drawn
/// on it ([`crate::verify::Framing::edit_of_a`]). Only the [`MAX_FRAMED`] largest members are
/// compared by keypoints.
pub fn framed_copies(records: &[&PhotoRecord], keypoints: &[Option<&Keypoints>]) -> Vec<bool> {
    let least_padding = records
        .iter()
        .filter_map(|r| r.padding)
        .fold(f32::INFINITY, f32::min);
    let mut edited: Vec<bool> = records
        .iter()
        .map(|r| r.padding.is_some_and(|p| p > least_padding + MORE_PADDING))
        .collect();
    let mut largest: Vec<usize> = (0..records.len().min(keypoints.len())).collect();
    largest.sort_by_key(|&i| std::cmp::Reverse(pixels(records[i])));
    largest.truncate(MAX_FRAMED);
    for (n, &i) in largest.iter().enumerate() {
        for &j in &largest[n + 1..] {
            let (Some(a), Some(b)) = (keypoints[i], keypoints[j]) else {
                continue;
            };
            let Some(found) = framing(a, b, ((i as u64) << 32) ^ j as u64) else {
                continue;
            };
            edited[j] |= counts(found.edit_of_a(), records[i], records[j]);
            edited[i] |= counts(found.swapped().edit_of_a(), records[j], records[i]);
        }
    }
    edited
}

/// Whether `edit`, found to make `copy` from `original`, marks `copy` as an edited copy:
/// marks only between photos of one size, a crop only of a photo not more padded than it
/// (the corners where a picture meets its frame can look like detail outside the copy).
fn counts(edit: Option<FramingEdit>, original: &PhotoRecord, copy: &PhotoRecord) -> bool {
    let padding = |r: &PhotoRecord| r.padding.unwrap_or(0.0);
    match edit {
        Some(FramingEdit::Marks) => (original.width, original.height) == (copy.width, copy.height),
        Some(FramingEdit::Crop) => padding(original) <= padding(copy) + MORE_PADDING,
        Some(FramingEdit::Padding) => true,
        None => false,
    }
}

/// Index of the keeper among `records` (none when empty), where `edited[i]` says that
/// record `i` is an edited copy of another ([`framed_copies`]): [`KeepRule::Auto`] keeps one
/// of the others when there is one; the other rules ignore it.
pub fn choose_keeper_framed(
    records: &[&PhotoRecord],
    rule: &KeepRule,
    edited: &[bool],
) -> Option<usize> {
    let originals: Vec<usize> = (0..records.len())
        .filter(|&i| !edited.get(i).copied().unwrap_or(false))
        .collect();
    if *rule != KeepRule::Auto || originals.is_empty() {
        return choose_keeper(records, rule);
    }
    let kept: Vec<&PhotoRecord> = originals.iter().map(|&i| records[i]).collect();
    originals.get(choose_keeper(&kept, rule)?).copied()
}

/// Index of the keeper among `records` (none when empty).
pub fn choose_keeper(records: &[&PhotoRecord], rule: &KeepRule) -> Option<usize> {
    let order = |a: &PhotoRecord, b: &PhotoRecord| match rule {
        KeepRule::Largest => default_order(a, b),
        KeepRule::Auto => copies_order(a, b),
        KeepRule::Sharpest => sharpness(b)
            .total_cmp(&sharpness(a))
            .then(default_order(a, b)),
        KeepRule::Newest => date_key(b).cmp(&date_key(a)).then(default_order(a, b)),
        KeepRule::Oldest => date_key(a).cmp(&date_key(b)).then(default_order(a, b)),
        KeepRule::PathPrefix(p) => {
            let under = |r: &PhotoRecord| !r.path.starts_with(p);
            under(a).cmp(&under(b)).then(default_order(a, b))
        }
    };
    (0..records.len()).min_by(|&i, &j| order(records[i], records[j]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dino_curate_index::ImageStats;

    fn rec(path: &str, w: u32, size: u64, mtime: i128, taken: Option<&str>) -> PhotoRecord {
        PhotoRecord {
            path: path.into(),
            size,
            mtime_ns: mtime,
            blake3: [0; 32],
            width: w,
            height: w,
            taken_at: taken.map(str::to_owned),
            stats: None,
            perceptual_hash: None,
            padding: None,
        }
    }

    #[test]
    fn each_rule_picks_its_keeper() -> Result<(), String> {
        let a = rec("/a/small.jpg", 100, 900, 5, None);
        let b = rec("/b/big.jpg", 400, 500, 9, None);
        let c = rec("/b/big-copy.jpg", 400, 800, 7, None);
        let all = [&a, &b, &c];
        let pick = |rule: &str| -> Result<Option<usize>, String> {
            Ok(choose_keeper(&all, &rule.parse()?))
        };
        assert_eq!(pick("largest")?, Some(2), "same pixels: the larger file");
        assert_eq!(pick("newest")?, Some(1));
        assert_eq!(pick("oldest")?, Some(0));
        assert_eq!(pick("path:/a")?, Some(0));
        assert_eq!(pick("auto")?, Some(2), "auto alone: largest");
        assert!("path:".parse::<KeepRule>().is_err());
        assert!("biggest".parse::<KeepRule>().is_err());
        Ok(())
    }

    #[test]
    fn bursts_keep_the_sharpest_by_default() {
        let stats = |v: f32| ImageStats {
            laplacian_var: v,
            mean_luma: 0.5,
            dark_fraction: 0.0,
            bright_fraction: 0.0,
            entropy: 7.0,
        };
        let mut blurry = rec("/big-blurry.jpg", 400, 900, 1, None);
        blurry.stats = Some(stats(10.0));
        let mut sharp = rec("/small-sharp.jpg", 200, 500, 2, None);
        sharp.stats = Some(stats(300.0));
        let both = [&blurry, &sharp];
        let auto = KeepRule::Auto;
        assert_eq!(
            choose_keeper(&both, &auto.for_kind(GroupKind::Burst)),
            Some(1)
        );
        assert_eq!(
            choose_keeper(&both, &auto.for_kind(GroupKind::Copy)),
            Some(0)
        );
        let largest = KeepRule::Largest.for_kind(GroupKind::Burst);
        assert_eq!(
            choose_keeper(&both, &largest),
            Some(0),
            "an explicit rule holds"
        );
    }

    fn sharp(mut r: PhotoRecord, v: f32) -> PhotoRecord {
        r.stats = Some(ImageStats {
            laplacian_var: v,
            mean_luma: 0.5,
            dark_fraction: 0.0,
            bright_fraction: 0.0,
            entropy: 7.0,
        });
        r
    }

    #[test]
    fn auto_sets_padded_copies_aside_but_largest_does_not() {
        let mut letterboxed = rec("/letterboxed.jpg", 800, 900, 1, None);
        letterboxed.padding = Some(0.3);
        let mut original = rec("/original.jpg", 600, 800, 2, None);
        original.padding = Some(0.0);
        let unknown = rec("/old-record.jpg", 500, 700, 3, None);
        let all = [&letterboxed, &original, &unknown];
        let edited = framed_copies(&all, &[None, None, None]);
        assert_eq!(edited, [true, false, false]);
        assert_eq!(
            choose_keeper_framed(&all, &KeepRule::Auto, &edited),
            Some(1)
        );
        assert_eq!(
            choose_keeper_framed(&all, &KeepRule::Largest, &edited),
            Some(0)
        );
        let every = [true, true, true];
        assert_eq!(
            choose_keeper_framed(&all, &KeepRule::Auto, &every),
            Some(0),
            "all set aside: the largest of all"
        );
    }

    #[test]
    fn auto_counts_sharpness_only_when_clearly_sharper() {
        let older = sharp(rec("/older.jpg", 400, 900, 1, None), 100.0);
        let noisier = sharp(rec("/re-encoded.jpg", 400, 900, 2, None), 110.0);
        assert_eq!(
            choose_keeper(&[&older, &noisier], &KeepRule::Auto),
            Some(0),
            "within {CLEARLY_SHARPER}×: the older"
        );
        let sharper = sharp(rec("/sharper.jpg", 400, 900, 2, None), 200.0);
        assert_eq!(choose_keeper(&[&older, &sharper], &KeepRule::Auto), Some(1));
        let larger = sharp(rec("/larger.jpg", 500, 900, 3, None), 10.0);
        assert_eq!(
            choose_keeper(&[&sharper, &larger], &KeepRule::Auto),
            Some(1),
            "largest first"
        );
    }

    #[test]
    fn exif_dates_come_before_file_times() {
        let a = rec("/a", 10, 1, 100, Some("2020-01-01T00:00:00"));
        let b = rec("/b", 10, 1, 1, Some("2021-01-01T00:00:00"));
        assert_eq!(choose_keeper(&[&a, &b], &KeepRule::Oldest), Some(0));
    }
}
