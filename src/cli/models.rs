//! `dino-curate models`, and turning a model choice (`--model NAME`, `--weights FILE`, the
//! workspace's trained model) into an embedder, downloading a released one when needed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use dino_curate::embed::Embedder;
use dino_curate::indexer::{content_hash, model_id};
use dino_curate::released::{
    self, CacheState, ModelCache, ModelError, ReleasedModel, DEFAULT_MODEL, RELEASED, RELEASED_SIZE,
};
use dino_curate::train::trainer::CHECKPOINT_FILE;
use dino_curate::workspace::{IndexModel, ModelChoice, Workspace};

/// The `--model` value that names the workspace's last trained model.
pub const TRAINED: &str = "trained";

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print the list as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `dino-curate models`: the released models, whether each is cached, and where.
pub fn run(args: &ModelsArgs) -> Result<()> {
    let cache = ModelCache::from_env()?;
    let rows: Vec<serde_json::Value> = RELEASED.iter().map(|m| model_row(&cache, m)).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("models cached in {}", cache.dir().display());
    for (m, row) in RELEASED.iter().zip(&rows) {
        let default = if m.name == DEFAULT_MODEL {
            " (default)"
        } else {
            ""
        };
        let sha = row["sha256"].as_str().unwrap_or("-");
        println!(
            "{:<14} {:<9} {:>4} MB  {:<22} ImageNet k-NN {:.1} %{default}\n    {}\n    sha256 {sha}",
            m.name,
            m.arch,
            row["bytes"].as_u64().unwrap_or(m.approx_bytes) / 1_000_000,
            row["cached"].as_str().unwrap_or(""),
            m.imagenet_knn_linear.0,
            row["source"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

fn model_row(cache: &ModelCache, m: &ReleasedModel) -> serde_json::Value {
    let path = cache.path(m);
    let (cached, bytes, sha, source) = match cache.state(m) {
        CacheState::Missing => ("no".to_owned(), None, None, cache.url(m)),
        CacheState::Partial(n) => (
            format!("partial ({} MB)", n / 1_000_000),
            None,
            None,
            cache.url(m),
        ),
        CacheState::Present(Some(r)) => ("yes".to_owned(), Some(r.size), Some(r.sha256), r.source),
        CacheState::Present(None) => (
            "yes (not yet verified)".to_owned(),
            std::fs::metadata(&path).ok().map(|md| md.len()),
            None,
            "placed by hand".to_owned(),
        ),
    };
    serde_json::json!({
        "name": m.name,
        "arch": m.arch,
        "default": m.name == DEFAULT_MODEL,
        "bytes": bytes.unwrap_or(m.approx_bytes),
        "cached": cached,
        "path": path.to_string_lossy(),
        "sha256": sha,
        "source": source,
        "imagenet_knn": m.imagenet_knn_linear.0,
        "imagenet_linear": m.imagenet_knn_linear.1,
    })
}

/// `--model NAME`: a released model or `trained`.
pub fn parse_choice(name: &str) -> Result<ModelChoice> {
    if name == TRAINED {
        return Ok(ModelChoice::Trained);
    }
    match released::find(name) {
        Some(m) => Ok(ModelChoice::Released {
            name: m.name.to_owned(),
        }),
        None => bail!(
            "no model called {name}: the released ones are {}, and `{TRAINED}` is the \
             workspace's last trained model",
            released::names()
        ),
    }
}

/// The released default.
pub fn default_choice() -> ModelChoice {
    ModelChoice::Released {
        name: DEFAULT_MODEL.to_owned(),
    }
}

/// An embedder and how to record it.
#[derive(Debug)]
pub struct Opened {
    pub embedder: Embedder,
    pub record: IndexModel,
    /// Identifies its vectors in the store ([`model_id`]).
    pub model_id: String,
}

/// What to do when a released model cannot be downloaded for lack of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offline {
    /// Say so in one line and embed with the untrained network (`index`).
    UseUntrained,
    /// Fail with the message (where only the model itself will do).
    Fail,
}

/// Opens `choice`, downloading a released model if it is not cached yet.
pub fn open_choice(
    ws: &Workspace,
    choice: &ModelChoice,
    device: &candle_core::Device,
    offline: Offline,
) -> Result<Opened> {
    match choice {
        ModelChoice::Released { name } => open_released(name, device, offline),
        ModelChoice::Trained => open_trained(ws, device),
        ModelChoice::File { weights, size } => {
            if !weights.is_file() {
                bail!("{}: no such weights file", weights.display());
            }
            file_opened(weights, *size, device)
        }
    }
}

/// A released model's cached file, opened.
fn released_opened(
    model: &ReleasedModel,
    path: PathBuf,
    device: &candle_core::Device,
) -> Result<Opened> {
    let embedder = Embedder::from_weights(&path, RELEASED_SIZE, device)?;
    let record = IndexModel::Released {
        name: model.name.to_owned(),
        weights: path.clone(),
        size: RELEASED_SIZE,
    };
    opened(embedder, &path, record)
}

/// A training run's checkpoint, opened at the run's own input size.
fn run_opened(file: &Path, device: &candle_core::Device) -> Result<Opened> {
    let embedder = Embedder::from_run(file, device)?;
    let record = IndexModel::Run {
        weights: file.to_path_buf(),
        size: embedder.size(),
    };
    opened(embedder, file, record)
}

/// Any weights file, opened at `size`.
fn file_opened(weights: &Path, size: u32, device: &candle_core::Device) -> Result<Opened> {
    let embedder = Embedder::from_weights(weights, size, device)?;
    let record = IndexModel::File {
        weights: weights.to_path_buf(),
        size,
    };
    opened(embedder, weights, record)
}

fn opened(embedder: Embedder, weights: &Path, record: IndexModel) -> Result<Opened> {
    let hash = content_hash(weights).map_err(|s| anyhow::anyhow!("{s}"))?;
    let model_id = model_id(&hash, embedder.size());
    Ok(Opened {
        embedder,
        record,
        model_id,
    })
}

fn open_trained(ws: &Workspace, device: &candle_core::Device) -> Result<Opened> {
    let Some(run) = ws.config()?.current_model else {
        bail!(
            "no trained model in {}: run `dino-curate train PHOTOS` first, or use a released \
             one (--model {DEFAULT_MODEL})",
            ws.root().display()
        );
    };
    let file = run.join(CHECKPOINT_FILE);
    if !file.is_file() {
        bail!(
            "{}: the workspace's model has no checkpoint yet (train it, or use --model {DEFAULT_MODEL})",
            file.display()
        );
    }
    run_opened(&file, device)
}

fn open_released(name: &str, device: &candle_core::Device, offline: Offline) -> Result<Opened> {
    let model = released::find(name)
        .with_context(|| format!("no released model {name} (known: {})", released::names()))?;
    let cache = ModelCache::from_env()?;
    match fetch_with_progress(&cache, model) {
        Ok(path) => released_opened(model, path, device),
        Err(e @ ModelError::Offline { .. }) if offline == Offline::UseUntrained => {
            eprintln!(
                "{e}: indexing without it (file hash, keypoints and an untrained network, \
                 enough for `dups`); search, clusters, outliers and select are not semantic \
                 until a later `index` with the model"
            );
            open_untrained(model.name, device)
        }
        Err(e) => Err(e.into()),
    }
}

/// The embedder `eval` and `attention` use: `--model` as a released name, `trained` or a
/// run folder; without it, the model `index` uses. A released model is downloaded if
/// needed; no network means an error here, not the untrained fallback.
pub fn open_named(
    model: Option<&str>,
    workspace: Option<&Path>,
    device: &candle_core::Device,
) -> Result<Embedder> {
    if let Some(run) = model.filter(|m| released::find(m).is_none() && *m != TRAINED) {
        return Ok(Embedder::from_run(Path::new(run), device)?);
    }
    let ws = Workspace::open(workspace)?;
    let choice = match model {
        Some(name) => parse_choice(name)?,
        None => ws.config()?.model.unwrap_or_else(default_choice),
    };
    Ok(open_choice(&ws, &choice, device, Offline::Fail)?.embedder)
}

/// The network `index` falls back on without a model (no file, no network).
pub fn open_untrained(wanted: &str, device: &candle_core::Device) -> Result<Opened> {
    let (embedder, hash) = Embedder::untrained_for_copies(device)?;
    let model_id = model_id(&hash, embedder.size());
    let record = IndexModel::Untrained {
        wanted: wanted.to_owned(),
        size: embedder.size(),
    };
    Ok(Opened {
        embedder,
        record,
        model_id,
    })
}

/// The cached file of `model`, or a download with a progress bar.
pub fn fetch_with_progress(
    cache: &ModelCache,
    model: &'static ReleasedModel,
) -> Result<PathBuf, ModelError> {
    if let Some(path) = cache.cached(model)? {
        return Ok(path);
    }
    let bar = ProgressBar::with_draw_target(Some(model.approx_bytes), ProgressDrawTarget::stderr())
        .with_style(
            ProgressStyle::with_template(
                "{prefix} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
        .with_prefix(format!("downloading {} (once)", model.name));
    let mut progress = |done: u64, total: Option<u64>| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    };
    let result = cache.ensure(model, &mut progress);
    bar.finish_and_clear();
    if let Ok(path) = &result {
        eprintln!("{} saved to {}", model.name, path.display());
    }
    result
}

/// The model the index was built with, from its record (no download).
pub fn reopen(record: &IndexModel, device: &candle_core::Device) -> Result<Opened> {
    match record {
        IndexModel::Released { name, .. } => {
            let model = released::find(name)
                .with_context(|| format!("the index was built with an unknown model {name}"))?;
            let cache = ModelCache::from_env()?;
            let Some(path) = cache.cached(model)? else {
                bail!(
                    "{}: the model the index was built with is gone; run `dino-curate index` again",
                    cache.path(model).display()
                );
            };
            released_opened(model, path, device)
        }
        IndexModel::Run { weights, .. } => {
            gone_check(weights)?;
            run_opened(weights, device)
        }
        IndexModel::File { weights, size } => {
            gone_check(weights)?;
            file_opened(weights, *size, device)
        }
        IndexModel::Untrained { wanted, .. } => open_untrained(wanted, device),
    }
}

fn gone_check(weights: &Path) -> Result<()> {
    if !weights.is_file() {
        bail!(
            "{}: the model the index was built with is gone; run `dino-curate index` again",
            weights.display()
        );
    }
    Ok(())
}

/// One line for the commands whose results need a semantic model, when the index was built
/// without one.
pub fn warn_if_not_semantic(ws: &Workspace) {
    if let Ok(cfg) = ws.config() {
        if let Some(IndexModel::Untrained { wanted, .. }) = cfg.index_model {
            eprintln!(
                "note: the index was built without a model (no network), so these results are \
                 not semantic (they follow looks); `dino-curate index` with a network \
                 downloads {wanted} and embeds again"
            );
        }
    }
}
