//! `dino-curate index`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::models::{default_choice, open_choice, parse_choice, reopen, Offline};
use super::{device_from, DeviceArg};
use dino_curate::calibrate::{calibrate_store, needs_calibration, Calibration, CALIBRATION_SEED};
use dino_curate::device::device_name;
use dino_curate::embed::Embedder;
use dino_curate::indexer::{
    decode_options, index, IndexEvent, IndexOptions, IndexSummary, StageClock, StageProfile,
    INDEX_DESCRIPTOR,
};
use dino_curate::photo::{DecodeOptions, Skipped, DEFAULT_MAX_PIXELS};
use dino_curate::watchdog::{StallPolicy, Watchdog};
use dino_curate::workspace::{IndexModel, ModelChoice, Workspace};
use dino_curate_index::Store;

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Folders to add to the collection (default: the folders recorded before).
    paths: Vec<PathBuf>,
    /// Embed with this model: a released DINO backbone (dino-vits16, dino-vits8,
    /// dino-vitb16, dino-vitb8, dino-resnet50; downloaded once, see `dino-curate models`)
    /// or `trained`, the workspace's last `train` run. Remembered for later runs (default:
    /// the last one used, else dino-vits16); another model than the index's re-embeds
    /// every photo.
    #[arg(long, value_name = "NAME", conflicts_with = "weights")]
    model: Option<String>,
    /// Embed with this weights file instead (official DINO .pth, or ours); remembered too.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Input side in pixels with --weights (the trained model uses its own).
    #[arg(long, default_value_t = 224, requires = "weights")]
    size: u32,
    /// Images per model batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// List the files that could not be indexed or were left out as not photos (and why),
    /// then exit.
    #[arg(long)]
    failures: bool,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Print the summary (or the failures) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also report where the time went: seconds per stage (hash, decode, model, the
    /// model's wait for photos...), on stderr, or under "profile" with --json.
    #[arg(long)]
    profile: bool,
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
    let choice = model_choice(&ws, args)?;
    let opened = open_choice(&ws, &choice, &device, Offline::UseUntrained)?;
    let embedder = opened.embedder.with_descriptor(INDEX_DESCRIPTOR);
    let model = opened.model_id;
    let mut cfg = ws.config()?;
    cfg.model = Some(choice);
    cfg.index_model = Some(opened.record.clone());
    ws.save_config(&cfg)?;
    eprintln!(
        "indexing {} with {} on {}",
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        describe(&opened.record),
        device_name(&device)
    );
    let opts = IndexOptions {
        roots,
        batch_size: args.batch_size,
        max_pixels: DEFAULT_MAX_PIXELS,
        clock: Arc::new(StageClock::default()),
    };
    let watchdog = Watchdog::start("index", StallPolicy::from_env())
        .context("cannot start the watchdog thread")?;
    let (summary, failures) = super::on_compute_pool(|| {
        index_with_progress(&mut store, &embedder, &model, &opts, &watchdog)
    })??;
    let profile = args.profile.then(|| {
        let photos = summary.embedded + summary.failed + summary.moved + summary.unchanged;
        opts.clock.report(photos, summary.reading_wall)
    });
    report(&summary, &failures, profile.as_ref(), args.json)?;
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
        // The rule itself is said once, by `dups` (issue 27: both printed it).
        Ok(c) => eprintln!(
            "dups calibrated on {} edited copies of {} of your photos; `dino-curate dups` \
             says the rule it takes",
            c.copies, c.originals
        ),
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

/// The model to embed with: the command line's, else the one used last, else the
/// released default.
fn model_choice(ws: &Workspace, args: &IndexArgs) -> Result<ModelChoice> {
    if let Some(weights) = &args.weights {
        let weights =
            std::path::absolute(weights).with_context(|| format!("{}", weights.display()))?;
        return Ok(ModelChoice::File {
            weights,
            size: args.size,
        });
    }
    match &args.model {
        Some(name) => parse_choice(name),
        None => Ok(ws.config()?.model.unwrap_or_else(default_choice)),
    }
}

/// The model of a record, for people.
fn describe(record: &IndexModel) -> String {
    match record {
        IndexModel::Released { name, size, .. } => format!("{name} at {size} px"),
        IndexModel::Run { weights, .. } | IndexModel::File { weights, .. } => {
            weights.display().to_string()
        }
        IndexModel::Untrained { size, .. } => format!("an untrained ResNet-18 at {size} px"),
    }
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

fn report(
    summary: &IndexSummary,
    failures: &[Skipped],
    profile: Option<&StageProfile>,
    json: bool,
) -> Result<()> {
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
    if s.ignored > 0 {
        let (what, pronoun) = match s.ignored {
            1 => ("file is not a photo and was", "it"),
            _ => ("files are not photos and were", "them"),
        };
        eprintln!(
            "{} other {what} left out (dino-curate index --failures lists {pronoun})",
            s.ignored
        );
    }
    if let Some(profile) = profile {
        eprint!("{profile}");
    }
    if json {
        let mut value = serde_json::to_value(summary)?;
        if let (Some(profile), Some(object)) = (profile, value.as_object_mut()) {
            object.insert("profile".into(), serde_json::to_value(profile)?);
        }
        println!("{value}");
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
    let Some(record) = ws.config()?.index_model else {
        bail!("nothing indexed yet: run `dino-curate index` first");
    };
    let opened = reopen(&record, device)?;
    if store.meta()?.model_id.as_deref() != Some(opened.model_id.as_str()) {
        bail!("the model changed since the index was built: run `dino-curate index` again");
    }
    Ok(opened.embedder.with_descriptor(INDEX_DESCRIPTOR))
}
