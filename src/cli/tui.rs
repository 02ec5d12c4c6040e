//! `dino-curate tui`: opens the index and hands it to the terminal UI.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use image::RgbImage;

use dino_curate::attention::{attention_of, AttentionMaps, DEFAULT_SIZE};
use dino_curate::curate::keeper::KeepRule;
use dino_curate::curate::search::QueryPhoto;
use dino_curate::embed::Embedder;
use dino_curate::tui::job::{AttentionMapper, QueryEmbedder, Settings, Worker};
use dino_curate::workspace::Workspace;
use dino_curate_index::Store;

use super::DeviceArg;
use dino_curate::curate::GRAPH_K;

#[derive(Debug, Args)]
pub struct TuiArgs {
    /// Near-duplicates as `dups` finds them.
    #[command(flatten)]
    matching: super::curate::DupMatchArgs,
    /// Compare vectors with the collection's mean removed, as `dups --centre`.
    #[arg(long)]
    centre: bool,
    /// Which photo of a duplicate group to keep: auto (of copies the original, not a crop
    /// or a letterboxed, framed or captioned copy, then the largest, sharpest, oldest; of a
    /// burst the sharpest shot), largest, sharpest, newest, oldest or path:PREFIX.
    #[arg(long, default_value = "auto")]
    keep: KeepRule,
    /// Number of clusters (default: about √(photos/2)).
    #[arg(short, long)]
    k: Option<usize>,
    /// How many similar photos a search lists.
    #[arg(long, default_value_t = 30)]
    search_k: usize,
    /// Show no photo previews (details only).
    #[arg(long)]
    no_previews: bool,
    /// Where to compute the vector of an image searched by path outside the index, and
    /// attention maps.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

pub fn run(args: &TuiArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    let store = Store::open(ws.root())
        .with_context(|| format!("cannot open the index in {}", ws.root().display()))?;
    let model = IndexedModel::new(ws.clone(), args.device);
    let worker = Worker::new(
        ws.clone(),
        store,
        Settings {
            rule: args.matching.rule_in(&ws)?,
            graph_k: GRAPH_K,
            centre: args.centre,
            keep: args.keep.clone(),
            clusters: args.k,
            search_k: args.search_k,
        },
        Some(query_embedder(model.clone())),
    )
    .with_attention(attention_mapper(model));
    let thumbs = ws.root().join("thumbs");
    dino_curate::tui::term::run(worker, Some(thumbs), !args.no_previews)?;
    Ok(())
}

/// The model the index was built with, loaded on first use and shared by the search by
/// file and the attention maps.
#[derive(Clone)]
struct IndexedModel {
    ws: Workspace,
    device: DeviceArg,
    model: Arc<Mutex<Option<Embedder>>>,
}

impl IndexedModel {
    fn new(ws: Workspace, device: DeviceArg) -> Self {
        Self {
            ws,
            device,
            model: Arc::default(),
        }
    }

    /// `f` of the model, loading it first if need be.
    fn with<T>(&self, store: &Store, f: impl FnOnce(&Embedder) -> Result<T>) -> Result<T> {
        let mut model = self
            .model
            .lock()
            .map_err(|_| anyhow!("the model was lost to an earlier failure"))?;
        if model.is_none() {
            // No notice printed: the screen belongs to the UI.
            let device = dino_curate::device::select_device(self.device.into())?.device;
            *model = Some(super::index::indexed_model(&self.ws, store, &device)?);
        }
        f(model.as_ref().context("no model")?)
    }
}

/// Search queries from image files with the indexed model.
fn query_embedder(model: IndexedModel) -> QueryEmbedder {
    Box::new(move |store, path| {
        model
            .with(store, |m| Ok(QueryPhoto::of_file(m, path)?))
            .map_err(|e| format!("{e:#}"))
    })
}

/// Attention maps of decoded photos with the indexed model, as `dino-curate attention`.
fn attention_mapper(model: IndexedModel) -> AttentionMapper {
    Box::new(move |store, image: &RgbImage| {
        model
            .with(store, |m| -> Result<(RgbImage, AttentionMaps)> {
                Ok(attention_of(m, image, DEFAULT_SIZE)?)
            })
            .map_err(|e| format!("{e:#}"))
    })
}

#[derive(Debug, Args)]
pub struct BenchTuiArgs {
    /// Photos in the synthetic collection.
    #[arg(long, default_value_t = 100_000)]
    photos: u64,
    /// Terminal columns.
    #[arg(long, default_value_t = 200)]
    width: u16,
    /// Terminal rows.
    #[arg(long, default_value_t = 50)]
    height: u16,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `dino-curate bench tui`.
pub fn bench(args: &BenchTuiArgs) -> Result<()> {
    let r = dino_curate::tui::bench::run(args.photos, args.width, args.height)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} photos, {}×{}: first frame {:.1} ms, key + redraw median {:.2} ms, max {:.2} ms",
            r.photos,
            r.size.0,
            r.size.1,
            r.first_frame_ms,
            r.key_redraw_median_ms,
            r.key_redraw_max_ms
        );
    }
    Ok(())
}
