//! Which photo of a duplicate group to keep.

use std::cmp::Ordering;
use std::path::PathBuf;

use dino_curate_index::PhotoRecord;

use super::burst::GroupKind;

/// The rule naming a group's keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepRule {
    /// The default: [`KeepRule::Largest`] of copies, [`KeepRule::Sharpest`] of a burst.
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
    /// The rule for a group of `kind`: [`KeepRule::Auto`] resolved, others as they are.
    pub fn for_kind(&self, kind: GroupKind) -> KeepRule {
        match (self, kind) {
            (Self::Auto, GroupKind::Copy) => Self::Largest,
            (Self::Auto, GroupKind::Burst) => Self::Sharpest,
            (rule, _) => rule.clone(),
        }
    }
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
    let pixels = |r: &PhotoRecord| u64::from(r.width) * u64::from(r.height);
    pixels(b)
        .cmp(&pixels(a))
        .then(b.size.cmp(&a.size))
        .then(date_key(a).cmp(&date_key(b)))
        .then(a.path.cmp(&b.path))
}

/// Index of the keeper among `records` (none when empty).
pub fn choose_keeper(records: &[&PhotoRecord], rule: &KeepRule) -> Option<usize> {
    let order = |a: &PhotoRecord, b: &PhotoRecord| match rule {
        KeepRule::Largest | KeepRule::Auto => default_order(a, b),
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

    #[test]
    fn exif_dates_come_before_file_times() {
        let a = rec("/a", 10, 1, 100, Some("2020-01-01T00:00:00"));
        let b = rec("/b", 10, 1, 1, Some("2021-01-01T00:00:00"));
        assert_eq!(choose_keeper(&[&a, &b], &KeepRule::Oldest), Some(0));
    }
}
