//! The background job thread: owns the index, runs the same curation functions as the
//! command line, and reports through a channel. The UI sends a [`Request`] and keeps
//! drawing; each request ends with exactly one final [`Reply`] (anything but
//! [`Reply::Progress`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};

use dino_curate_index::{KnnGraph, PhotoId, PhotoRecord, Store};

use super::action::Query;
use crate::curate::clusters::default_k;
use crate::curate::collection::{Collection, DupGroup};
use crate::curate::dups::DupRule;
use crate::curate::keeper::KeepRule;
use crate::train::plot::{series_from_metrics, Series};
use crate::train::trainer::METRICS_FILE;
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
    /// Nearest photos with their similarity, best first.
    pub hits: Vec<(PhotoId, f32)>,
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
    /// Smallest similarity of two near-duplicates.
    pub threshold: f32,
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

/// Turns an image file outside the collection into a query vector (the indexed model).
pub type QueryEmbedder =
    Box<dyn FnMut(&Store, &Path) -> std::result::Result<Vec<f32>, String> + Send>;

/// What the job thread owns.
pub struct Worker {
    workspace: Workspace,
    store: Store,
    settings: Settings,
    embed: Option<QueryEmbedder>,
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
            last: None,
        }
    }

    fn regroup(&mut self, keep: KeepRule) -> Result<Reply> {
        let (collection, knn) = self
            .last
            .as_ref()
            .ok_or_else(|| Error::Config("nothing loaded yet".into()))?;
        let rule = DupRule::with_threshold(self.settings.threshold);
        let dups = collection.duplicates(knn, &rule, &keep);
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
        let mut knn = self.store.knn_graph(self.settings.graph_k)?;
        let rule = DupRule::with_threshold(self.settings.threshold);
        let (collection, dups) = collection.duplicates_from_graph(
            &mut knn,
            self.settings.centre,
            &rule,
            &self.settings.keep,
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
        let vector = match &query {
            Query::Photo(id) => self.store.embedding(*id)?,
            Query::Path(path) => self.vector_of_file(path)?,
        }
        .ok_or_else(|| Error::Config("no vector for this photo".into()))?;
        let k = self.settings.search_k;
        let mut hits = self.store.search(&vector, k + 1)?;
        if let Query::Photo(id) = query {
            hits.retain(|h| h.0 != id);
        }
        hits.truncate(k);
        Ok(Found { query, hits })
    }

    fn vector_of_file(&mut self, path: &Path) -> Result<Option<Vec<f32>>> {
        let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        if let Some((id, _)) = self.store.get_by_path(&path)? {
            return Ok(self.store.embedding(id)?);
        }
        let embed = self.embed.as_mut().ok_or_else(|| {
            Error::Config("searching by a file outside the index needs the model".into())
        })?;
        embed(&self.store, &path).map(Some).map_err(Error::Config)
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
            keep: KeepRule::Largest,
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
    Ok(Training { run: name, series })
}
