//! `dino-curate index`: bring the store up to date with the photo folders.
//!
//! Unchanged files (same size and mtime as their record) are not even opened. The rest are
//! hashed: the same content at the same path only updates the record; the content of a
//! record whose file vanished is that photo moved, and keeps its vector; anything else is
//! decoded and embedded. Records under the roots whose file is gone are removed. Every
//! store write is one sled transaction, so a run killed at any moment leaves a consistent
//! store and the next run finishes the job. Compute never prints: progress goes through
//! [`IndexEvent`]s.

mod identify;
mod pipeline;
mod plan;
mod profile;
mod stats;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use dino_curate_index::{PhotoId, PhotoRecord, Store};
use serde::Serialize;

use crate::embed::{Descriptor, Embedder};
use crate::photo::{self, Skipped};
use crate::train::views::View;
use crate::{Error, Result};
use pipeline::{decode_candidate, Prepared, ReadContext, Reader};

pub use identify::{content_hash, mtime_ns, taken_at};
pub use profile::{Stage, StageClock, StageProfile, StageTime};

/// How `index` decodes photos for a model that looks at `view_size` pixels: what calibrating
/// `dups` must decode the same way.
pub fn decode_options(view_size: u32, max_pixels: u64) -> crate::photo::DecodeOptions {
    ReadContext::decode_options(view_size, max_pixels)
}
pub use stats::{image_stats, BRIGHT_LUMA, DARK_LUMA, STATS_SHORT_SIDE};

/// How to index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Photo folders to index (absolute).
    pub roots: Vec<PathBuf>,
    /// Images per model batch.
    pub batch_size: usize,
    /// Largest photo accepted, in pixels.
    pub max_pixels: u64,
    /// Where the time of the run goes, per stage (read it after the run).
    pub clock: Arc<StageClock>,
}

/// What a run did, as `index --json` prints it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IndexSummary {
    /// Image files found under the roots.
    pub scanned: usize,
    /// Photos decoded and embedded (new or changed content).
    pub embedded: usize,
    /// Photos already indexed (same size and mtime, or same content).
    pub unchanged: usize,
    /// Photos recognised at a new path by their content.
    pub moved: usize,
    /// Records dropped because their file is gone or no longer readable.
    pub removed: usize,
    /// Files that could not be indexed (listed by `index --failures`).
    pub failed: usize,
    /// Files left out for their extension: not a photo format (listed by
    /// `index --failures` too).
    pub ignored: usize,
    /// Wall time of reading and embedding the photos, for [`StageClock::report`].
    #[serde(skip)]
    pub reading_wall: std::time::Duration,
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone)]
pub enum IndexEvent {
    /// The store held vectors of another model: they were dropped.
    ModelChanged {
        /// Photos that will be embedded again.
        photos: usize,
    },
    /// The folders were compared with the store; `to_read` files need reading.
    Planned {
        /// Files found.
        scanned: usize,
        /// Files to hash and maybe decode.
        to_read: usize,
        /// Files skipped as unchanged.
        unchanged: usize,
    },
    /// `done` of the `to_read` files are handled.
    Progress {
        /// Files handled so far.
        done: usize,
    },
    /// A file was skipped.
    Failed(Skipped),
    /// A stage of the run begins (what it does, e.g. "building the search graph").
    Stage(&'static str),
}

/// The descriptor the index stores: CLS ⊕ GeM-pooled patch tokens on the centre crop,
/// chosen on the near-duplicate benchmark (docs/quality.md, "Descriptor").
pub const INDEX_DESCRIPTOR: Descriptor = Descriptor::ClsGem;

/// Identifies a model's vectors: the weights' content, the input size and the descriptor.
pub fn model_id(weights_hash: &[u8; 32], view_size: u32) -> String {
    let hex: String = weights_hash[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}-{view_size}px-{}", INDEX_DESCRIPTOR.name())
}

/// Running totals and the state shared by the steps of a run.
struct Run<'a> {
    store: &'a Store,
    embedder: &'a Embedder,
    ctx: ReadContext,
    summary: IndexSummary,
    claimed: HashSet<PhotoId>,
    failed_paths: HashSet<PathBuf>,
    /// Decoded photos waiting for the model, with their stored keypoints.
    batch: Vec<(PhotoRecord, View, Vec<u8>)>,
    batch_size: usize,
}

impl Run<'_> {
    fn fail(&mut self, skipped: Skipped, events: &mut dyn FnMut(IndexEvent)) -> Result<()> {
        self.store.record_failure(&skipped.path, &skipped.reason)?;
        self.failed_paths.insert(skipped.path.clone());
        self.summary.failed += 1;
        events(IndexEvent::Failed(skipped));
        Ok(())
    }

    fn handle(&mut self, prepared: Prepared, events: &mut dyn FnMut(IndexEvent)) -> Result<()> {
        match prepared {
            Prepared::Touched { id, record } => {
                self.store.update_record(id, &record)?;
                self.store.clear_failure(&record.path)?;
                self.summary.unchanged += 1;
            }
            Prepared::Moved {
                record,
                from,
                candidate,
            } => match from.into_iter().find(|id| !self.claimed.contains(id)) {
                Some(id) => self.relocate(id, record)?,
                None => {
                    let decoded = decode_candidate(*candidate, record.blake3, &self.ctx);
                    self.handle(decoded, events)?;
                }
            },
            Prepared::Decoded {
                record,
                view,
                keypoints,
            } => {
                self.batch.push((record, view, keypoints));
                if self.batch.len() >= self.batch_size {
                    self.embed_batch()?;
                }
            }
            Prepared::Failed { skipped, stale } => {
                if let Some(id) = stale {
                    self.store.remove(id)?;
                    self.summary.removed += 1;
                }
                self.fail(skipped, events)?;
            }
        }
        Ok(())
    }

    /// The missing record `id` lives at `record.path` now; its pixels did not change.
    fn relocate(&mut self, id: PhotoId, record: PhotoRecord) -> Result<()> {
        self.claimed.insert(id);
        let old = self.store.get(id)?;
        let record = match old {
            Some(old) => PhotoRecord {
                width: old.width,
                height: old.height,
                taken_at: old.taken_at,
                stats: old.stats,
                perceptual_hash: old.perceptual_hash,
                padding: old.padding,
                ..record
            },
            None => record,
        };
        self.store.relocate(id, &record)?;
        self.store.clear_failure(&record.path)?;
        self.summary.moved += 1;
        Ok(())
    }

    fn embed_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let (mut records, mut views, mut keypoints) = (Vec::new(), Vec::new(), Vec::new());
        for (record, view, points) in batch {
            records.push(record);
            views.push(view);
            keypoints.push(points);
        }
        let clock = Arc::clone(&self.ctx.clock);
        let embedded = clock.time(Stage::Model, || {
            self.embedder.embed_rows_with_regions(views)
        })?;
        clock.time(Stage::StoreWrite, || -> Result<()> {
            for ((record, (vector, regions)), points) in
                records.iter().zip(&embedded).zip(&keypoints)
            {
                self.store.put_with_regions(record, vector, regions)?;
                self.store.put_keypoints(&record.blake3, points)?;
            }
            Ok(())
        })?;
        self.summary.embedded += records.len();
        Ok(())
    }
}

/// Brings `store` up to date with `opts.roots` using `embedder`, whose vectors are
/// identified by `model`. Bad files are recorded as failures and the run carries on.
pub fn index(
    store: &mut Store,
    embedder: &Embedder,
    model: &str,
    opts: &IndexOptions,
    events: &mut dyn FnMut(IndexEvent),
) -> Result<IndexSummary> {
    let before = store.meta()?.photos;
    if store.set_model(model, embedder.dim())? && before > 0 {
        events(IndexEvent::ModelChanged { photos: before });
    }
    events(IndexEvent::Stage("scanning the folders"));
    let report = photo::scan(&opts.roots).map_err(|e| Error::Config(e.to_string()))?;
    let scanned = report.files.len();
    let plan = plan::make_plan(
        store,
        report.files,
        &opts.roots,
        embedder.makes_region_queries(),
    )?;
    events(IndexEvent::Planned {
        scanned,
        to_read: plan.candidates.len(),
        unchanged: plan.unchanged,
    });
    let ctx = ReadContext {
        decode: ReadContext::decode_options(embedder.size(), opts.max_pixels),
        view_size: embedder.size(),
        missing_by_hash: Arc::new(plan.missing_by_hash),
        clock: Arc::clone(&opts.clock),
    };
    let vanished_without_vector = plan.vanished_without_vector;
    let candidates = plan.candidates;
    let mut run = Run {
        store,
        embedder,
        ctx: ctx.clone(),
        summary: IndexSummary {
            scanned,
            unchanged: plan.unchanged,
            ..IndexSummary::default()
        },
        claimed: HashSet::new(),
        failed_paths: HashSet::new(),
        batch: Vec::new(),
        batch_size: opts.batch_size.max(1),
    };
    for skipped in report.skipped {
        run.fail(skipped, events)?;
    }
    for ignored in report.ignored {
        run.store.record_failure(&ignored.path, &ignored.reason)?;
        run.failed_paths.insert(ignored.path);
        run.summary.ignored += 1;
    }
    events(IndexEvent::Stage("reading and embedding photos"));
    let reading = std::time::Instant::now();
    read_and_embed(&mut run, candidates, events)?;
    run.summary.reading_wall = reading.elapsed();
    events(IndexEvent::Stage("forgetting removed photos"));
    remove_vanished(&mut run, &ctx, &vanished_without_vector)?;
    clear_old_failures(&run, &opts.roots)?;
    if run.summary.removed > 0 || run.summary.embedded > 0 {
        events(IndexEvent::Stage("dropping unused keypoints"));
        store.prune_keypoints()?;
    }
    let summary = run.summary;
    events(IndexEvent::Stage("building the search graph"));
    store.sync_ann()?;
    events(IndexEvent::Stage("writing the index to disk"));
    store.flush()?;
    Ok(summary)
}

fn read_and_embed(
    run: &mut Run<'_>,
    candidates: Vec<plan::Candidate>,
    events: &mut dyn FnMut(IndexEvent),
) -> Result<()> {
    let mut reader = Reader::start(candidates, run.ctx.clone(), run.batch_size, 2)
        .map_err(|e| Error::Config(format!("cannot start the reader thread: {e}")))?;
    let mut done = 0;
    let clock = Arc::clone(&run.ctx.clock);
    while let Some(chunk) = clock.time(Stage::ModelWait, || reader.next_chunk()) {
        for prepared in chunk {
            run.handle(prepared, events)?;
            done += 1;
        }
        run.embed_batch()?;
        events(IndexEvent::Progress { done });
    }
    Ok(())
}

/// How much of `index`'s reading [`read_without_model`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStages {
    /// Decoding to pixels only.
    Decode,
    /// Everything `index` does before the model: hash, decode, view, statistics,
    /// perceptual hash, keypoints and EXIF date.
    AllButModel,
}

/// Photos read by [`read_without_model`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadTally {
    /// Photos read.
    pub photos: usize,
    /// Files that failed.
    pub failed: usize,
}

/// Reads the photos under `roots` as `index` would for a model of `view_size` pixels,
/// without the model and the store, on the threads of the current rayon pool: what
/// `bench read` times. The time per stage goes to `clock`.
pub fn read_without_model(
    roots: &[PathBuf],
    view_size: u32,
    stages: ReadStages,
    jpeg: photo::JpegDecoder,
    clock: &Arc<StageClock>,
) -> Result<ReadTally> {
    use rayon::prelude::*;
    let report = photo::scan(roots).map_err(|e| Error::Config(e.to_string()))?;
    let ctx = ReadContext {
        decode: photo::DecodeOptions {
            jpeg,
            ..ReadContext::decode_options(view_size, photo::DEFAULT_MAX_PIXELS)
        },
        view_size,
        missing_by_hash: Arc::default(),
        clock: Arc::clone(clock),
    };
    let read_one = |file: photo::FoundFile| match stages {
        ReadStages::Decode => clock
            .time(Stage::Decode, || photo::decode(&file.path, &ctx.decode))
            .is_ok(),
        ReadStages::AllButModel => {
            let candidate = plan::Candidate {
                file,
                known: None,
                needs_vector: true,
                has_keypoints: false,
            };
            matches!(pipeline::prepare(candidate, &ctx), Prepared::Decoded { .. })
        }
    };
    let read: Vec<bool> = report.files.into_par_iter().map(read_one).collect();
    let photos = read.iter().filter(|&&ok| ok).count();
    Ok(ReadTally {
        photos,
        failed: read.len() - photos,
    })
}

/// Removes the records whose file is gone and that no new path claimed.
fn remove_vanished(run: &mut Run<'_>, ctx: &ReadContext, without_vector: &[PhotoId]) -> Result<()> {
    for id in ctx.missing_by_hash.values().flatten().chain(without_vector) {
        if !run.claimed.contains(id) {
            run.store.remove(*id)?;
            run.summary.removed += 1;
        }
    }
    Ok(())
}

/// Forgets the failures under the roots that this run did not meet again (fixed or gone).
fn clear_old_failures(run: &Run<'_>, roots: &[PathBuf]) -> Result<()> {
    for (path, _) in run.store.failures()? {
        if plan::under_any(&path, roots) && !run.failed_paths.contains(&path) {
            run.store.clear_failure(&path)?;
        }
    }
    Ok(())
}
