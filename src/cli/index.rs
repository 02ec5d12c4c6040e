//! `dino-curate index`

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{device_from, DeviceArg};
use dino_curate::calibrate::{
    calibrate_store, needs_calibration, Calibration, CALIBRATION_SEED, DEFAULT_PRECISION,
};
use dino_curate::device::device_name;
use dino_curate::embed::Embedder;
use dino_curate::indexer::{
    content_hash, decode_options, index, model_id, IndexEvent, IndexOptions, IndexSummary,
    INDEX_DESCRIPTOR,
};
use dino_curate::photo::{DecodeOptions, Skipped, DEFAULT_MAX_PIXELS};
use dino_curate::train::trainer::CHECKPOINT_FILE;
use dino_curate::watchdog::{StallPolicy, Watchdog};
use dino_curate::workspace::{IndexModel, Workspace};
use dino_curate_index::Store;

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Folders to add to the collection (default: the folders `train` recorded).
    paths: Vec<PathBuf>,
    /// Embed with this weights file (official DINO .pth, or ours) instead of the
    /// workspace's trained model.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Input side in pixels with --weights (the trained model uses its own).
    #[arg(long, default_value_t = 224, requires = "weights")]
    size: u32,
    /// Images per model batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// List the files that could not be indexed (and why), then exit.
    #[arg(long)]
    failures: bool,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Print the summary (or the failures) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &IndexArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    let mut store = Store::open(ws.root())
        .with_context(|| format!("cannot open the index in {}", ws.root().display()))?;
    if args.failures {
        return list_failures(&store, args.json);
    }
    let roots = collection_roots(&ws, &args.paths)?;
    let device = device_from(args.device)?;
    let (weights, size) = model_file(&ws, args)?;
    let hash = content_hash(&weights).map_err(|s| anyhow::anyhow!("{s}"))?;
    let embedder = match args.weights {
        Some(_) => Embedder::from_weights(&weights, size, &device)?,
        None => Embedder::from_run(&weights, &device)?,
    }
    .with_descriptor(INDEX_DESCRIPTOR);
    let model = model_id(&hash, embedder.size());
    let mut cfg = ws.config()?;
    cfg.index_model = Some(IndexModel {
        weights: weights.clone(),
        size: embedder.size(),
        from_run: args.weights.is_none(),
    });
    ws.save_config(&cfg)?;
    eprintln!(
        "indexing {} with {} on {}",
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        weights.display(),
        device_name(&device)
    );
    let opts = IndexOptions {
        roots,
        batch_size: args.batch_size,
        max_pixels: DEFAULT_MAX_PIXELS,
    };
    let watchdog = Watchdog::start("index", StallPolicy::from_env())
        .context("cannot start the watchdog thread")?;
    let (summary, failures) = super::on_compute_pool(|| {
        index_with_progress(&mut store, &embedder, &model, &opts, &watchdog)
    })??;
    report(&summary, &failures, args.json)?;
    let decode = decode_options(embedder.size(), DEFAULT_MAX_PIXELS);
    watchdog.stage("calibrating dups");
    super::on_compute_pool(|| calibrate_dups(&ws, &mut store, &decode, &watchdog))?
}

/// Calibrates `dups` on edited copies of a sample of the photos when there is no
/// calibration for this index yet or the collection changed by more than a tenth
/// ([`needs_calibration`]). A failure is reported, not fatal: `dups` then keeps the
/// previous calibration or its defaults.
fn calibrate_dups(
    ws: &Workspace,
    store: &mut Store,
    decode: &DecodeOptions,
    watchdog: &Watchdog,
) -> Result<()> {
    let meta = store.meta()?;
    let model = meta.model_id.clone().unwrap_or_default();
    let existing = Calibration::load(ws.root()).unwrap_or_else(|e| {
        eprintln!("calibrating again: {e}");
        None
    });
    if !needs_calibration(existing.as_ref(), meta.embeddings, &model) {
        return Ok(());
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(
        style("calibrating dups {wide_bar} {pos}/{len} photos copied"),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        watchdog.beat(format!(
            "calibrating dups ({done} of {total} photos copied)"
        ));
    };
    let result = calibrate_store(store, decode, CALIBRATION_SEED, &progress)
        .and_then(|c| c.save(ws.root()).map(|()| c));
    bar.finish_and_clear();
    match result {
        Ok(c) => match c.point_for(DEFAULT_PRECISION) {
            Some(p) => eprintln!(
                "dups calibrated on {} edited copies of {} of your photos: for precision \
                 {DEFAULT_PRECISION}, hash agreement {:.2} and {} keypoint inliers (found {:.0} % \
                 of the copies)",
                c.copies,
                c.originals,
                p.hash_agreement,
                p.min_inliers,
                100.0 * p.recall
            ),
            None => eprintln!(
                "dups calibrated on {} edited copies of {} of your photos: no rule reaches \
                 precision {DEFAULT_PRECISION} there, so dups takes the strictest one",
                c.copies, c.originals
            ),
        },
        Err(e) => eprintln!("dups keeps its previous rule: calibrating failed: {e}"),
    }
    Ok(())
}

/// The recorded roots plus `paths` (made absolute and recorded).
fn collection_roots(ws: &Workspace, paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut cfg = ws.config()?;
    for path in paths {
        let abs = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
        if !abs.is_dir() {
            bail!("{}: not a folder", path.display());
        }
        if !cfg.roots.contains(&abs) {
            cfg.roots.push(abs);
        }
    }
    if cfg.roots.is_empty() {
        bail!(
            "no photo folder known: run `dino-curate train PHOTOS` or `dino-curate index PHOTOS`"
        );
    }
    if !paths.is_empty() {
        ws.save_config(&cfg)?;
    }
    Ok(cfg.roots)
}

/// The weights to embed with, and the input size (`None`: the run's own).
fn model_file(ws: &Workspace, args: &IndexArgs) -> Result<(PathBuf, u32)> {
    if let Some(w) = &args.weights {
        if !w.is_file() {
            bail!("{}: no such weights file", w.display());
        }
        return Ok((w.clone(), args.size));
    }
    let Some(run) = ws.config()?.current_model else {
        bail!(
            "no trained model in {}: run `dino-curate train PHOTOS` first, or pass --weights FILE",
            ws.root().display()
        );
    };
    let file = run.join(CHECKPOINT_FILE);
    if !file.is_file() {
        bail!(
            "{}: the workspace's model has no checkpoint yet (train it, or pass --weights FILE)",
            file.display()
        );
    }
    Ok((file, args.size))
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn index_with_progress(
    store: &mut Store,
    embedder: &Embedder,
    model: &str,
    opts: &IndexOptions,
    watchdog: &Watchdog,
) -> Result<(IndexSummary, Vec<Skipped>)> {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        .with_style(style("indexing {wide_bar} {pos}/{len} {per_sec} eta {eta}"));
    let mut failures = Vec::new();
    let mut to_read = 0;
    let mut on_event = |event: IndexEvent| match event {
        IndexEvent::ModelChanged { photos } => {
            bar.suspend(|| eprintln!("new model: the {photos} indexed photos are embedded again"))
        }
        IndexEvent::Planned {
            scanned,
            to_read: reading,
            unchanged,
        } => {
            bar.suspend(|| {
                eprintln!("{scanned} photos found: {unchanged} unchanged, {reading} to read")
            });
            bar.set_length(reading as u64);
            bar.reset_eta();
            to_read = reading;
        }
        IndexEvent::Progress { done } => {
            bar.set_position(done as u64);
            watchdog.beat(format!(
                "reading, embedding and storing photos ({done} of {to_read} done)"
            ));
        }
        IndexEvent::Failed(skipped) => failures.push(skipped),
        IndexEvent::Stage(stage) => watchdog.stage(stage),
    };
    let summary = index(store, embedder, model, opts, &mut on_event);
    bar.finish_and_clear();
    Ok((summary?, failures))
}

fn report(summary: &IndexSummary, failures: &[Skipped], json: bool) -> Result<()> {
    const SHOWN: usize = 10;
    for skipped in failures.iter().take(SHOWN) {
        eprintln!("skipped {skipped}");
    }
    if failures.len() > SHOWN {
        eprintln!(
            "… and {} more (dino-curate index --failures lists them all)",
            failures.len() - SHOWN
        );
    }
    let s = summary;
    eprintln!(
        "{} scanned: {} embedded, {} unchanged, {} moved, {} removed, {} failed",
        s.scanned, s.embedded, s.unchanged, s.moved, s.removed, s.failed
    );
    if json {
        println!("{}", serde_json::to_string(summary)?);
    }
    Ok(())
}

fn list_failures(store: &Store, json: bool) -> Result<()> {
    let failures = store.failures()?;
    if json {
        let list: Vec<_> = failures
            .iter()
            .map(|(path, reason)| {
                serde_json::json!({
                    "path": path.to_string_lossy(),
                    "lossy": path.to_str().is_none(),
                    "reason": reason,
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&list)?);
    } else if failures.is_empty() {
        eprintln!("no failures recorded");
    } else {
        for (path, reason) in &failures {
            println!("{}: {reason}", path.display());
        }
    }
    Ok(())
}

/// The model the index was built with, checked against the store's model id.
pub fn indexed_model(
    ws: &Workspace,
    store: &Store,
    device: &candle_core::Device,
) -> Result<Embedder> {
    let Some(m) = ws.config()?.index_model else {
        bail!("nothing indexed yet: run `dino-curate index` first");
    };
    if !m.weights.is_file() {
        bail!(
            "{}: the model the index was built with is gone; run `dino-curate index` again",
            m.weights.display()
        );
    }
    let hash = content_hash(&m.weights).map_err(|s| anyhow::anyhow!("{s}"))?;
    if store.meta()?.model_id.as_deref() != Some(model_id(&hash, m.size).as_str()) {
        bail!("the model changed since the index was built: run `dino-curate index` again");
    }
    let embedder = if m.from_run {
        Embedder::from_run(&m.weights, device)?
    } else {
        Embedder::from_weights(&m.weights, m.size, device)?
    };
    Ok(embedder.with_descriptor(INDEX_DESCRIPTOR))
}
