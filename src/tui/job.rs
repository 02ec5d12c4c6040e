//! The background job thread: owns the index, runs the same curation functions (and
//! attention maps) as the command line, and reports through a channel. The UI sends a [`Request`] and keeps
//! drawing; each request ends with exactly one final [`Reply`] (anything but
//! [`Reply::Progress`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};

use dino_curate_index::{KnnGraph, PhotoId, PhotoRecord, Store};
use image::RgbImage;

use super::action::Query;
use super::thumbs;
use crate::attention::{overlay, strongest, write_png, AttentionMaps, DEFAULT_SIZE};
use crate::curate::clusters::default_k;
use crate::curate::collection::{Collection, DupGroup};
use crate::curate::dups::{candidate_graph, DupRule};
use crate::curate::keeper::KeepRule;
use crate::curate::search::{self, QueryPhoto, SearchHit};
use crate::photo::{decode, DecodeOptions};
use crate::train::plot::{series_from_metrics, Series};
use crate::train::signal::LearnedSignal;
use crate::train::trainer::{METRICS_FILE, SIGNAL_FILE};
use crate::trash::Trash;
use crate::workspace::Workspace;
use crate::{Error, Result};

/// Work for the job thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Load the collection: clusters, duplicate groups, failures, training metrics.
    Load,
    /// The nearest photos to a query.
    Search(Query),
    /// Move these files to the trash, then reload.
    Trash(Vec<PathBuf>),
    /// Put back the last trash operation, then reload.
    Undo,
    /// Choose the duplicate groups' keepers again with this rule (no reload).
    Regroup(KeepRule),
    /// The attention map of this photo.
    Attention(PhotoId),
}

/// One cluster as the UI lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRow {
    /// The member nearest the centroid.
    pub representative: PhotoId,
    /// Mean similarity of the members to the centroid.
    pub cohesion: f32,
    /// Members, most central first.
    pub members: Vec<PhotoId>,
}

/// The training run's metrics, if there is a run.
#[derive(Debug, Clone)]
pub struct Training {
    /// Name of the run folder.
    pub run: String,
    /// Curves read from its `metrics.jsonl`.
    pub series: Vec<Series>,
    /// The learned-signal line of its `signal.json`, once the run has ended.
    pub signal: Option<String>,
}

/// Everything [`Request::Load`] computes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Why there is no photo to show (an empty index), if so.
    pub empty_reason: Option<String>,
    /// Every indexed photo.
    pub records: HashMap<PhotoId, PhotoRecord>,
    /// Visual themes, largest first.
    pub clusters: Vec<ClusterRow>,
    /// Near-duplicate groups, as `dino-curate dups` lists them.
    pub dups: Vec<DupGroup>,
    /// The rule that chose the groups' keepers.
    pub keep: KeepRule,
    /// Files the index could not read, with the reason.
    pub failures: Vec<(PathBuf, String)>,
    /// The current training run, or why there is none to show.
    pub training: std::result::Result<Training, String>,
}

/// Search results.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// What was searched for.
    pub query: Query,
    /// The query's copies first (as `dups` finds them), then the nearest other photos.
    pub hits: Vec<SearchHit>,
}

/// A photo's attention map, the heads' mean drawn over the photo.
#[derive(Clone)]
pub struct AttentionMap {
    /// The overlay, shrunk to thumbnail size for the preview pane.
    pub overlay: RgbImage,
    /// Patch rows.
    pub rows: usize,
    /// Patch columns.
    pub cols: usize,
    /// Heads averaged.
    pub heads: usize,
    /// The patch (row, column) the mean attends to most, from the top left.
    pub strongest: (usize, usize),
    /// The full-size overlay PNG written in the workspace, or why it could not be.
    pub file: std::result::Result<PathBuf, String>,
}

impl std::fmt::Debug for AttentionMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttentionMap")
            .field("overlay", &self.overlay.dimensions())
            .field("grid", &(self.rows, self.cols))
            .field("heads", &self.heads)
            .field("strongest", &self.strongest)
            .field("file", &self.file)
            .finish()
    }
}

/// What the job thread reports.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Still working: what on.
    Progress(String),
    /// A fresh snapshot, with a note on what was done first (trash, undo).
    Loaded(Box<Snapshot>, Option<String>),
    /// Search results.
    Found(Found),
    /// The duplicate groups with keepers chosen by another rule.
    Regrouped(Vec<DupGroup>, KeepRule),
    /// A photo's attention map, or why there is none.
    Attention(PhotoId, std::result::Result<Box<AttentionMap>, String>),
    /// The request failed.
    Failed(String),
}

impl Reply {
    /// Whether this reply ends its request.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Progress(_))
    }
}

/// The same knobs as `dino-curate dups` and `clusters`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// When two photos are near-duplicates.
    pub rule: DupRule,
    /// Neighbours per photo in the k-NN graph.
    pub graph_k: usize,
    /// Compare vectors with the collection's mean removed (`dups --centre`).
    pub centre: bool,
    /// Which photo of a group to keep.
    pub keep: KeepRule,
    /// Number of clusters (default: from the collection size).
    pub clusters: Option<usize>,
    /// How many neighbours a search lists.
    pub search_k: usize,
}

/// Turns an image file into a search query with the indexed model: its vector, regions,
/// hash and keypoints ([`QueryPhoto::of_file`]).
pub type QueryEmbedder =
    Box<dyn FnMut(&Store, &Path) -> std::result::Result<QueryPhoto, String> + Send>;

/// The photo as the model sees it and the last block's attention over it
/// ([`crate::attention::attention_of`] with the indexed model, [`DEFAULT_SIZE`] pixels).
pub type AttentionMapper = Box<
    dyn FnMut(&Store, &RgbImage) -> std::result::Result<(RgbImage, AttentionMaps), String> + Send,
>;

/// Why a photo has no attention map when the binary handed in no model.
const NO_MODEL: &str = "attention maps need the model the index was built with";

/// Folder of the workspace the attention overlays are written to.
pub const ATTENTION_DIR: &str = "attention";

/// What the job thread owns.
pub struct Worker {
    workspace: Workspace,
    store: Store,
    settings: Settings,
    embed: Option<QueryEmbedder>,
    attention: Option<AttentionMapper>,
    /// The collection and k-NN graph of the last load, to regroup without reloading.
    last: Option<(Collection, KnnGraph)>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("workspace", &self.workspace)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Starts the job thread; it ends when the request sender is dropped.
pub fn spawn(mut worker: Worker) -> (Sender<Request>, Receiver<Reply>) {
    let (req_tx, req_rx) = channel::<Request>();
    let (reply_tx, reply_rx) = channel();
    std::thread::spawn(move || {
        for request in req_rx {
            let reply = worker
                .handle(request, &reply_tx)
                .unwrap_or_else(|e| Reply::Failed(e.to_string()));
            if reply_tx.send(reply).is_err() {
                break;
            }
        }
    });
    (req_tx, reply_rx)
}

impl Worker {
    /// A worker over `store`; `embed` serves searches by a file the index does not hold.
    pub fn new(
        workspace: Workspace,
        store: Store,
        settings: Settings,
        embed: Option<QueryEmbedder>,
    ) -> Self {
        Self {
            workspace,
            store,
            settings,
            embed,
            attention: None,
            last: None,
        }
    }

    /// The same worker, drawing attention maps with `mapper`.
    pub fn with_attention(mut self, mapper: AttentionMapper) -> Self {
        self.attention = Some(mapper);
        self
    }

    fn regroup(&mut self, keep: KeepRule) -> Result<Reply> {
        let (collection, knn) = self
            .last
            .as_ref()
            .ok_or_else(|| Error::Config("nothing loaded yet".into()))?;
        let rule = self.settings.rule;
        let dups = collection.duplicates(knn, &rule, &keep, Some(&self.store));
        self.settings.keep = keep.clone();
        Ok(Reply::Regrouped(dups, keep))
    }

    fn handle(&mut self, request: Request, out: &Sender<Reply>) -> Result<Reply> {
        let progress = |what: &str| {
            let _ = out.send(Reply::Progress(what.into()));
        };
        let note = match request {
            Request::Load => None,
            Request::Search(query) => return self.search(query).map(Reply::Found),
            Request::Regroup(keep) => return self.regroup(keep),
            Request::Attention(id) => {
                let map = self.attention_map(id, &progress).map(Box::new);
                return Ok(Reply::Attention(id, map));
            }
            Request::Trash(files) => {
                progress("moving to the trash");
                Some(self.trash(&files)?)
            }
            Request::Undo => {
                progress("undoing");
                Some(self.undo()?)
            }
        };
        let snapshot = self.load(&progress)?;
        Ok(Reply::Loaded(Box::new(snapshot), note))
    }

    fn load(&mut self, progress: &dyn Fn(&str)) -> Result<Snapshot> {
        progress("loading the index");
        let failures = self.store.failures()?;
        let training = training(&self.workspace);
        let collection = match Collection::load(&self.store) {
            Ok(c) => c,
            Err(Error::Config(why)) => {
                return Ok(Snapshot {
                    empty_reason: Some(why),
                    failures,
                    training,
                    ..Snapshot::default()
                })
            }
            Err(e) => return Err(e),
        };
        progress("clustering");
        let clusters = self.clusters(&collection);
        progress("finding duplicates");
        let (mut knn, _) = candidate_graph(&mut self.store, self.settings.graph_k)?;
        let rule = self.settings.rule;
        let (collection, dups) = collection.duplicates_from_graph(
            &mut knn,
            self.settings.centre,
            &rule,
            &self.settings.keep,
            Some(&self.store),
        );
        let snapshot = Snapshot {
            empty_reason: None,
            records: collection.records.clone(),
            clusters,
            dups,
            keep: self.settings.keep.clone(),
            failures,
            training,
        };
        self.last = Some((collection, knn));
        Ok(snapshot)
    }

    fn clusters(&self, c: &Collection) -> Vec<ClusterRow> {
        let k = self
            .settings
            .clusters
            .unwrap_or_else(|| default_k(c.vectors.len()));
        let mut rows: Vec<ClusterRow> = c
            .clusters(k, 0)
            .into_iter()
            .map(|(cl, members)| ClusterRow {
                representative: c.vectors.id(cl.representative),
                cohesion: cl.cohesion,
                members,
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.members.len()));
        rows
    }

    fn search(&mut self, query: Query) -> Result<Found> {
        let photo = self.query_photo(&query)?;
        let k = self.settings.search_k;
        let found = search::search(&mut self.store, &photo, &self.settings.rule, k)?;
        Ok(Found {
            query,
            hits: found.top(k),
        })
    }

    /// What a search knows of `query`: computed from its file with the model when the
    /// binary handed one in (regions included), else what the index stored of it.
    fn query_photo(&mut self, query: &Query) -> Result<QueryPhoto> {
        let (path, id) = match query {
            Query::Photo(id) => {
                let record = self.store.get(*id)?;
                let record = record.ok_or_else(|| Error::Config("no longer indexed".into()))?;
                (record.path, Some(*id))
            }
            Query::Path(path) => {
                let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
                let id = self.store.get_by_path(&path)?.map(|(id, _)| id);
                (path, id)
            }
        };
        let computed = match self.embed.as_mut() {
            Some(embed) => Some(embed(&self.store, &path).map_err(Error::Config)),
            None => None,
        };
        match (computed, id) {
            (Some(Ok(mut photo)), _) => {
                photo.id = id;
                Ok(photo)
            }
            // the file may be gone or unreadable since it was indexed
            (Some(Err(_)) | None, Some(id)) => QueryPhoto::of_indexed(&self.store, id),
            (Some(Err(e)), None) => Err(e),
            (None, None) => Err(Error::Config(
                "searching by a file outside the index needs the model".into(),
            )),
        }
    }

    /// The attention map of photo `id`.
    fn attention_map(
        &mut self,
        id: PhotoId,
        progress: &dyn Fn(&str),
    ) -> std::result::Result<AttentionMap, String> {
        let record = self.store.get(id).map_err(|e| e.to_string())?;
        let record = record.ok_or("the photo is no longer indexed")?;
        let mapper = self.attention.as_mut().ok_or(NO_MODEL)?;
        progress("decoding the photo");
        let opts = DecodeOptions {
            target_short_side: Some(DEFAULT_SIZE),
            ..DecodeOptions::default()
        };
        let photo = decode(&record.path, &opts).map_err(|e| e.reason())?;
        progress("computing the attention map");
        let (shown, maps) = mapper(&self.store, &photo.image)?;
        Ok(self.drawn(&record.blake3, &shown, &maps))
    }

    /// The heads' mean drawn over `shown`, also written full size to
    /// `attention/<blake3>.png` in the workspace.
    fn drawn(&self, key: &thumbs::Key, shown: &RgbImage, maps: &AttentionMaps) -> AttentionMap {
        let mean = maps.mean();
        let full = overlay(shown, &mean, maps.rows, maps.cols);
        let file = self.workspace.root().join(ATTENTION_DIR);
        let file = file.join(format!("{}.png", thumbs::hex(key)));
        AttentionMap {
            overlay: thumbs::fit(&full),
            rows: maps.rows,
            cols: maps.cols,
            heads: maps.heads.len(),
            strongest: strongest(&mean, maps.cols).unwrap_or_default(),
            file: save_png(&file, &full)
                .map(|()| file)
                .map_err(|e| e.to_string()),
        }
    }

    fn trash(&self, files: &[PathBuf]) -> Result<String> {
        let trash = Trash::new(self.workspace.root());
        let plan = trash.plan(files, &self.workspace.config()?.roots)?;
        let moved = trash.remove(&plan, &self.store)?;
        Ok(format!(
            "moved {} to the trash (u puts it back)",
            photos(moved.files.len())
        ))
    }

    fn undo(&self) -> Result<String> {
        Ok(match Trash::new(self.workspace.root()).undo(&self.store)? {
            None => "nothing to undo".into(),
            Some(moved) => format!("restored {}", photos(moved.files.len())),
        })
    }
}

/// Writes `img` to `file`, creating its folder.
fn save_png(file: &Path, img: &RgbImage) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_png(file, img)
}

/// "1 photo", "3 photos".
pub fn photos(n: usize) -> String {
    if n == 1 {
        "1 photo".into()
    } else {
        format!("{n} photos")
    }
}

impl Default for Snapshot {
    /// Nothing loaded yet.
    fn default() -> Self {
        Self {
            empty_reason: Some("loading…".into()),
            records: HashMap::new(),
            clusters: Vec::new(),
            dups: Vec::new(),
            keep: KeepRule::Auto,
            failures: Vec::new(),
            training: Err("loading…".into()),
        }
    }
}

/// The current run's metrics, or why there are none.
fn training(ws: &Workspace) -> std::result::Result<Training, String> {
    let run = ws
        .config()
        .map_err(|e| e.to_string())?
        .current_model
        .ok_or("no training run yet: `dino-curate train PATH` starts one")?;
    let series = series_from_metrics(&run.join(METRICS_FILE)).map_err(|e| e.to_string())?;
    let name = run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let signal = std::fs::read(run.join(SIGNAL_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<LearnedSignal>(&bytes).ok())
        .map(|s| s.describe());
    Ok(Training {
        run: name,
        series,
        signal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker over a workspace in `dir` whose index holds one 64 × 48 photo.
    fn worker_with_a_photo(dir: &Path) -> Result<(Worker, PhotoId)> {
        let ws = Workspace::open(Some(&dir.join("ws")))?;
        let store = Store::open(ws.root())?;
        store.set_model("fake", 2)?;
        let path = dir.join("p.png");
        RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 30]))
            .save(&path)
            .map_err(|e| Error::Config(e.to_string()))?;
        let record = PhotoRecord {
            path,
            size: 1,
            mtime_ns: 0,
            blake3: [9; 32],
            width: 64,
            height: 48,
            taken_at: None,
            stats: None,
            perceptual_hash: None,
            padding: None,
        };
        let id = store.put(&record, &[1.0, 0.0])?;
        let settings = Settings {
            rule: DupRule::with_threshold(0.9),
            graph_k: 4,
            centre: false,
            keep: KeepRule::Largest,
            clusters: None,
            search_k: 5,
        };
        Ok((Worker::new(ws, store, settings, None), id))
    }

    /// Two heads over 2 × 3 patches, both strongest at the last patch.
    fn fake_mapper() -> AttentionMapper {
        Box::new(|_, img| {
            let head = vec![0.1, 0.1, 0.1, 0.1, 0.1, 0.5];
            let maps = AttentionMaps {
                rows: 2,
                cols: 3,
                heads: vec![head.clone(), head],
            };
            Ok((img.clone(), maps))
        })
    }

    #[test]
    fn attention_is_drawn_and_written_to_the_workspace() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("temp dir", e))?;
        let (worker, id) = worker_with_a_photo(dir.path())?;
        let mut worker = worker.with_attention(fake_mapper());
        let (tx, rx) = channel();
        let Reply::Attention(of, Ok(map)) = worker.handle(Request::Attention(id), &tx)? else {
            panic!("no attention map");
        };
        assert_eq!(of, id);
        assert_eq!(
            (map.rows, map.cols, map.heads, map.strongest),
            (2, 3, 2, (1, 2))
        );
        let file = map.file.clone().expect("written");
        assert!(file.starts_with(dir.path().join("ws").join(ATTENTION_DIR)));
        let written = image::open(&file).map_err(|e| Error::Config(e.to_string()))?;
        assert_eq!((written.width(), written.height()), (64, 48));
        assert!(rx.try_iter().all(|r| !r.is_final()), "progress only");
        Ok(())
    }

    #[test]
    fn attention_without_a_model_says_so() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("temp dir", e))?;
        let (mut worker, id) = worker_with_a_photo(dir.path())?;
        let (tx, _rx) = channel();
        let Reply::Attention(_, Err(why)) = worker.handle(Request::Attention(id), &tx)? else {
            panic!("a map without a model");
        };
        assert_eq!(why, NO_MODEL);
        let Reply::Attention(_, Err(why)) = worker.handle(Request::Attention(99), &tx)? else {
            panic!("a map of no photo");
        };
        assert!(why.contains("no longer indexed"));
        Ok(())
    }

    #[test]
    fn search_from_an_indexed_photo_puts_its_copy_before_a_closer_photo() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("temp dir", e))?;
        let (mut worker, first) = worker_with_a_photo(dir.path())?;
        let hash = Some([0b1010_1010; 32]);
        let query = worker
            .store
            .get(first)?
            .ok_or(Error::Config("gone".into()))?;
        let photo = |name: &str, blake3: u8, hash: Option<[u8; 32]>| PhotoRecord {
            path: dir.path().join(name),
            blake3: [blake3; 32],
            perceptual_hash: hash,
            ..query.clone()
        };
        let query = photo("q.png", 3, hash);
        let id = worker.store.put(&query, &[0.0, 1.0])?;
        let copy = worker.store.put(&photo("copy.png", 1, hash), &[0.8, 0.6])?;
        let near = worker
            .store
            .put(&photo("near.png", 2, None), &[0.14, 0.99])?;
        worker.settings.rule = DupRule::with_threshold(0.995).with_hash_agreement(Some(0.69));
        let (tx, _rx) = channel();
        let Reply::Found(found) = worker.handle(Request::Search(Query::Photo(id)), &tx)? else {
            panic!("no search results");
        };
        let listed: Vec<(PhotoId, String)> = found.hits.iter().map(|h| (h.id, h.label())).collect();
        assert_eq!(
            listed,
            vec![
                (copy, "copy: hash 1.00".into()),
                (near, "similar 0.99".into()),
                (first, "similar 0.00".into())
            ]
        );
        Ok(())
    }
}
