//! Reading the candidate files ahead of the model: hashing, deciding what each one is, and
//! decoding the new ones, in parallel (rayon) on a background thread, handed over in
//! batches through a bounded queue so that decoding overlaps inference.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use dino_curate_index::{PhotoId, PhotoRecord};
use image::RgbImage;
use rayon::prelude::*;

use super::identify::{content_hash, mtime_ns, taken_at};
use super::plan::Candidate;
use super::profile::{Stage, StageClock};
use super::stats::{image_stats, STATS_SHORT_SIDE};
use crate::phash::perceptual_hash_and_padding;
use crate::photo::{self, DecodeOptions, Skipped};
use crate::train::views::{eval_view, View};
use crate::verify::keypoints_of;

/// What reading one candidate file found.
#[derive(Debug)]
pub enum Prepared {
    /// The content at a known path did not change (only its mtime did): keep the vector.
    Touched {
        /// The record at that path.
        id: PhotoId,
        /// Its new metadata.
        record: PhotoRecord,
    },
    /// The content is that of records whose file is gone: the photo moved here.
    Moved {
        /// Metadata of the file at its new path (size, dates and hash; pixels unknown).
        record: PhotoRecord,
        /// The missing records with that content.
        from: Vec<PhotoId>,
        /// The candidate, to decode if none of `from` can be claimed (boxed: two records
        /// would make this variant twice the size of the others).
        candidate: Box<Candidate>,
    },
    /// New or changed content, decoded and ready for the model.
    Decoded {
        /// Its full record.
        record: PhotoRecord,
        /// The model's input view.
        view: View,
        /// Its verification keypoints, stored form ([`crate::verify::Keypoints`]).
        keypoints: Vec<u8>,
    },
    /// The file could not be used.
    Failed {
        /// Which file and why.
        skipped: Skipped,
        /// The record at that path, now stale.
        stale: Option<PhotoId>,
    },
}

/// How the reader decodes and what it needs to recognise moves.
#[derive(Debug, Clone)]
pub struct ReadContext {
    /// Decoding limits and the downscale target.
    pub decode: DecodeOptions,
    /// The model's input side.
    pub view_size: u32,
    /// Content hashes of records whose file is gone.
    pub missing_by_hash: Arc<HashMap<[u8; 32], Vec<PhotoId>>>,
    /// Where the time goes.
    pub clock: Arc<StageClock>,
}

impl ReadContext {
    /// Decoding options that serve both the model's view and the quality statistics.
    pub fn decode_options(view_size: u32, max_pixels: u64) -> DecodeOptions {
        let view_short = (view_size as f32 * 256.0 / 224.0).ceil() as u32;
        DecodeOptions {
            max_pixels,
            target_short_side: Some(view_short.max(STATS_SHORT_SIDE)),
            ..DecodeOptions::default()
        }
    }
}

/// The record of a file from its listing, its hash and (when decoded) its pixels.
fn base_record(candidate: &Candidate, blake3: [u8; 32]) -> PhotoRecord {
    let file = &candidate.file;
    PhotoRecord {
        path: file.path.clone(),
        size: file.size,
        mtime_ns: mtime_ns(file.modified),
        blake3,
        width: 0,
        height: 0,
        taken_at: None,
        stats: None,
        perceptual_hash: None,
        padding: None,
    }
}

/// The statistics on the image at the measuring size.
fn stats_of(img: &RgbImage) -> dino_curate_index::ImageStats {
    let short = img.width().min(img.height());
    if short <= STATS_SHORT_SIDE {
        return image_stats(img);
    }
    let scale = STATS_SHORT_SIDE as f32 / short as f32;
    let (w, h) = (
        ((img.width() as f32 * scale).round() as u32).max(1),
        ((img.height() as f32 * scale).round() as u32).max(1),
    );
    image_stats(&image::imageops::resize(
        img,
        w,
        h,
        image::imageops::FilterType::Triangle,
    ))
}

/// Decodes a candidate into its full record and the model's view.
pub fn decode_candidate(candidate: Candidate, blake3: [u8; 32], ctx: &ReadContext) -> Prepared {
    let path = &candidate.file.path;
    let replaces = candidate.known.as_ref().map(|(id, _)| *id);
    let clock = &ctx.clock;
    let photo = match clock.time(Stage::Decode, || photo::decode(path, &ctx.decode)) {
        Ok(p) => p,
        Err(err) => {
            return Prepared::Failed {
                skipped: err.into(),
                stale: replaces,
            }
        }
    };
    let view = match clock.time(Stage::View, || eval_view(&photo.image, ctx.view_size)) {
        Ok(v) => v,
        Err(err) => {
            return Prepared::Failed {
                skipped: Skipped::new(path.clone(), err.to_string()),
                stale: replaces,
            }
        }
    };
    let (hash, padding) = clock.time(Stage::PerceptualHash, || {
        perceptual_hash_and_padding(&photo.image)
    });
    let record = PhotoRecord {
        width: photo.original_width,
        height: photo.original_height,
        taken_at: clock.time(Stage::ExifDate, || taken_at(path)),
        stats: Some(clock.time(Stage::Stats, || stats_of(&photo.image))),
        perceptual_hash: Some(hash),
        padding: Some(padding),
        ..base_record(&candidate, blake3)
    };
    let keypoints = clock.time(Stage::Keypoints, || keypoints_of(&photo.image).to_bytes());
    Prepared::Decoded {
        record,
        view,
        keypoints,
    }
}

/// Hashes a candidate and decides what it is; decodes it only when its content is new.
pub fn prepare(candidate: Candidate, ctx: &ReadContext) -> Prepared {
    let blake3 = match ctx
        .clock
        .time(Stage::Hash, || content_hash(&candidate.file.path))
    {
        Ok(h) => h,
        Err(skipped) => {
            let stale = candidate.known.as_ref().map(|(id, _)| *id);
            return Prepared::Failed { skipped, stale };
        }
    };
    if let Some((id, known)) = &candidate.known {
        // records from before the perceptual hash or keypoints are decoded once more
        if known.blake3 == blake3
            && !candidate.needs_vector
            && known.perceptual_hash.is_some()
            && candidate.has_keypoints
        {
            let record = PhotoRecord {
                size: candidate.file.size,
                mtime_ns: mtime_ns(candidate.file.modified),
                ..known.clone()
            };
            return Prepared::Touched { id: *id, record };
        }
    } else if let Some(from) = ctx.missing_by_hash.get(&blake3) {
        return Prepared::Moved {
            record: base_record(&candidate, blake3),
            from: from.clone(),
            candidate: Box::new(candidate),
        };
    }
    decode_candidate(candidate, blake3, ctx)
}

/// Batches of prepared files, made on a background thread.
#[derive(Debug)]
pub struct Reader {
    receiver: Option<Receiver<Vec<Prepared>>>,
    worker: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts reading `candidates` in chunks of `chunk` files, at most `queue` chunks ahead.
    pub fn start(
        candidates: Vec<Candidate>,
        ctx: ReadContext,
        chunk: usize,
        queue: usize,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(queue.max(1));
        let worker = std::thread::Builder::new()
            .name("dino-index-reader".into())
            .spawn(move || {
                let mut rest = candidates.into_iter();
                loop {
                    let part: Vec<Candidate> = rest.by_ref().take(chunk.max(1)).collect();
                    if part.is_empty() {
                        break;
                    }
                    let prepared: Vec<Prepared> =
                        part.into_par_iter().map(|c| prepare(c, &ctx)).collect();
                    if sender.send(prepared).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            receiver: Some(receiver),
            worker: Some(worker),
        })
    }

    /// The next chunk, `None` after the last.
    pub fn next_chunk(&mut self) -> Option<Vec<Prepared>> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Unblock the worker (its sends fail once the receiver is gone), then join it.
        drop(self.receiver.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
