//! Where an `index` run's time goes, per stage: what `index --profile` and `bench read`
//! print. Each stage sums the time of every thread that ran it, so the reading stages can
//! add up to more than the wall time when they run on several cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A stage of reading and embedding a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the file for its content hash.
    Hash,
    /// Decoding to pixels at the reduced size (orientation and resizing included).
    Decode,
    /// The model's input view (crop, resize, normalise).
    View,
    /// Brightness, contrast and sharpness statistics.
    Stats,
    /// The perceptual hash.
    PerceptualHash,
    /// Verification keypoints.
    Keypoints,
    /// The EXIF date.
    ExifDate,
    /// The model's forward passes.
    Model,
    /// The model's thread waiting for decoded photos.
    ModelWait,
    /// Store writes (records, vectors, keypoints).
    StoreWrite,
}

impl Stage {
    const ALL: [Stage; 10] = [
        Stage::Hash,
        Stage::Decode,
        Stage::View,
        Stage::Stats,
        Stage::PerceptualHash,
        Stage::Keypoints,
        Stage::ExifDate,
        Stage::Model,
        Stage::ModelWait,
        Stage::StoreWrite,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Hash => "hash",
            Stage::Decode => "decode",
            Stage::View => "model view",
            Stage::Stats => "statistics",
            Stage::PerceptualHash => "perceptual hash",
            Stage::Keypoints => "keypoints",
            Stage::ExifDate => "EXIF date",
            Stage::Model => "model",
            Stage::ModelWait => "model waiting",
            Stage::StoreWrite => "store writes",
        }
    }
}

/// Time per stage, added to from any thread.
#[derive(Debug, Default)]
pub struct StageClock {
    nanos: [AtomicU64; Stage::ALL.len()],
}

impl StageClock {
    /// Runs `work`, adding its duration to `stage`.
    pub fn time<T>(&self, stage: Stage, work: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = work();
        self.add(stage, start.elapsed());
        out
    }

    /// Adds `spent` to `stage`.
    pub fn add(&self, stage: Stage, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[stage as usize].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Seconds spent in `stage` so far.
    pub fn seconds(&self, stage: Stage) -> f64 {
        self.nanos[stage as usize].load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// The report of a run that handled `photos` photos in `wall`.
    pub fn report(&self, photos: usize, wall: Duration) -> StageProfile {
        let wall_s = wall.as_secs_f64();
        let stages = Stage::ALL
            .iter()
            .map(|&stage| StageTime {
                stage: stage.name(),
                seconds: round3(self.seconds(stage)),
                ms_per_photo: round3(self.seconds(stage) * 1e3 / photos.max(1) as f64),
            })
            .filter(|row| row.seconds > 0.0)
            .collect();
        StageProfile {
            photos,
            wall_s: round3(wall_s),
            photos_per_s: round3(photos as f64 / wall_s.max(1e-9)),
            model_wait_share: round3(self.seconds(Stage::ModelWait) / wall_s.max(1e-9)),
            stages,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Where the time of a run went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageProfile {
    /// Photos handled.
    pub photos: usize,
    /// Wall time of the reading-and-embedding part, in seconds.
    pub wall_s: f64,
    /// Photos per second of wall time.
    pub photos_per_s: f64,
    /// Share of the wall time the model's thread spent waiting for photos.
    pub model_wait_share: f64,
    /// Time per stage, summed over threads (stages that did not run are left out).
    pub stages: Vec<StageTime>,
}

/// One stage's share.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageTime {
    /// The stage.
    pub stage: &'static str,
    /// Seconds, summed over threads.
    pub seconds: f64,
    /// Milliseconds per photo.
    pub ms_per_photo: f64,
}

impl std::fmt::Display for StageProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} photos in {:.1} s ({:.1} photos/s); the model waited {:.0} % of the time",
            self.photos,
            self.wall_s,
            self.photos_per_s,
            self.model_wait_share * 100.0
        )?;
        writeln!(f, "{:<16} {:>9} {:>10}", "stage", "seconds", "ms/photo")?;
        for row in &self.stages {
            writeln!(
                f,
                "{:<16} {:>9.2} {:>10.1}",
                row.stage, row.seconds, row.ms_per_photo
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Stage, StageClock};

    #[test]
    fn stages_add_up_and_report_per_photo() {
        let clock = StageClock::default();
        clock.add(Stage::Decode, Duration::from_millis(300));
        clock.add(Stage::Decode, Duration::from_millis(100));
        clock.add(Stage::ModelWait, Duration::from_millis(250));
        let report = clock.report(4, Duration::from_secs(1));
        assert_eq!(report.model_wait_share, 0.25);
        assert_eq!(report.photos_per_s, 4.0);
        let decode = report.stages.iter().find(|r| r.stage == "decode");
        assert_eq!(decode.map(|r| r.ms_per_photo), Some(100.0));
        assert!(report.stages.iter().all(|r| r.stage != "hash"));
        assert!(report.to_string().contains("waited 25 %"));
    }
}
