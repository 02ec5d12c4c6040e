//! The curation commands: `search`, `dups`, `clusters`, `outliers`, `select`, `quality`,
//! `trash` and `undo`. Compute lives in `dino_curate::curate`; this file reads the store,
//! prints, asks for confirmation and moves files.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use dino_curate::calibrate::{Calibration, CalibrationPoint, DEFAULT_PRECISION, MIN_PHOTOS};
use dino_curate::curate::clusters::default_k;
use dino_curate::curate::collection::{Collection, DupGroup, DupMember};
use dino_curate::curate::dups::{
    candidate_graph, DupRule, Evidence, DEFAULT_HASH_AGREEMENT, DEFAULT_MIN_INLIERS,
    HASH_SCAN_LIMIT, KEYPOINT_SCAN_LIMIT, SEARCHED_GRAPH_LIMIT,
};
use dino_curate::curate::keeper::KeepRule;
use dino_curate::curate::quality::flags;
use dino_curate::curate::search::{QueryPhoto, SearchHit};
use dino_curate::curate::GRAPH_K;
use dino_curate::trash::{Moved, Trash};
use dino_curate::workspace::Workspace;
use dino_curate_index::{PhotoId, Store};

/// Default `dups --threshold` (see docs/quality.md for the measurement behind it).
pub const DEFAULT_DUP_THRESHOLD: f32 = 0.995;

/// A path as JSON: the text, and `"lossy": true` beside it when it was not UTF-8.
fn path_fields(key: &str, path: &Path) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(key.into(), json!(path.to_string_lossy()));
    if path.to_str().is_none() {
        m.insert("lossy".into(), json!(true));
    }
    m
}

fn open_store(ws: &Workspace) -> Result<Store> {
    Store::open(ws.root())
        .with_context(|| format!("cannot open the index in {}", ws.root().display()))
}

fn path_of(c: &Collection, id: PhotoId) -> PathBuf {
    c.records
        .get(&id)
        .map(|r| r.path.clone())
        .unwrap_or_default()
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Asks `question` on stderr; true only for an explicit yes.
fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// When two photos are near-duplicates: shared by `dups`, `tui` and `eval neardup`.
#[derive(Debug, Args)]
pub struct DupMatchArgs {
    /// Precision to aim for: `dups` takes the rule that `index` calibrated on edited copies
    /// of your own photos and that reaches this precision there with the most copies found
    /// (without a calibration: hash agreement 0.69 and 16 inliers, measured on benchmarks).
    #[arg(long, value_name = "FRACTION", default_value_t = DEFAULT_PRECISION)]
    precision: f64,
    /// With --no-verify: smallest similarity (cosine, −1…1) of two near-duplicates (with
    /// verification the model's similarity only proposes the pairs to verify).
    #[arg(long, default_value_t = DEFAULT_DUP_THRESHOLD)]
    threshold: f32,
    /// Expert: link two photos whose perceptual hashes agree on this fraction of their 256
    /// bits under some flip or quarter-turn, instead of the calibrated agreement (finds the
    /// re-encoded, resized, recoloured, flipped and letterboxed copies).
    #[arg(long, value_name = "FRACTION")]
    hash_agreement: Option<f32>,
    /// Ignore perceptual hashes: keypoint verification (or, with --no-verify, the model's
    /// similarity) alone decides.
    #[arg(long, conflicts_with = "hash_agreement")]
    no_hash: bool,
    /// Expert: link a candidate pair nothing else links when this many of their keypoints
    /// line up under one affine transform (mirroring allowed), instead of the calibrated
    /// count (finds crops and captioned copies).
    #[arg(long, value_name = "N")]
    min_inliers: Option<u32>,
    /// Do not verify candidate pairs by their keypoints: the model's similarity links them
    /// at --threshold (the rule before verification existed).
    #[arg(long, conflicts_with = "min_inliers")]
    no_verify: bool,
}

/// Where the hash agreement and inlier count of a rule came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuleSource {
    /// The calibration's rule for the asked precision.
    Calibrated(CalibrationPoint),
    /// No rule of the calibration reaches the asked precision: its strictest.
    NotReached,
    /// No calibration (too few photos, or an index from before calibration).
    Uncalibrated,
    /// --hash-agreement and --min-inliers (or --no-hash and --no-verify) set both.
    Given,
}

impl DupMatchArgs {
    /// The grouping rule, from `calibration` unless the flags set it, or why the values
    /// make none.
    pub fn rule(&self, calibration: Option<&Calibration>) -> Result<(DupRule, RuleSource)> {
        self.check()?;
        let hash_given = self.no_hash || self.hash_agreement.is_some();
        let inliers_given = self.no_verify || self.min_inliers.is_some();
        let (point, source) = match calibration {
            _ if hash_given && inliers_given => (None, RuleSource::Given),
            None => (None, RuleSource::Uncalibrated),
            Some(c) => match c.point_for(self.precision) {
                Some(p) => (Some(p), RuleSource::Calibrated(p)),
                None => (c.strictest(), RuleSource::NotReached),
            },
        };
        let hash = self
            .hash_agreement
            .or(point.map(|p| p.hash_agreement))
            .unwrap_or(DEFAULT_HASH_AGREEMENT);
        let inliers = self
            .min_inliers
            .or(point.map(|p| p.min_inliers))
            .unwrap_or(DEFAULT_MIN_INLIERS);
        let rule = DupRule::with_threshold(self.threshold)
            .with_hash_agreement((!self.no_hash).then_some(hash))
            .with_verification((!self.no_verify).then_some(inliers));
        Ok((rule, source))
    }

    /// The precision asked for.
    pub fn precision(&self) -> f64 {
        self.precision
    }

    /// Whether --no-verify was given.
    pub fn skips_verification(&self) -> bool {
        self.no_verify
    }

    /// Rejects values outside their ranges.
    fn check(&self) -> Result<()> {
        if !(self.precision > 0.0 && self.precision < 1.0) {
            bail!(
                "--precision {} is not a fraction between 0 and 1 (exclusive)",
                self.precision
            );
        }
        if !(-1.0..=1.0).contains(&self.threshold) {
            bail!(
                "--threshold {} is not a cosine between -1 and 1",
                self.threshold
            );
        }
        if let Some(a) = self.hash_agreement.filter(|a| !(0.0..=1.0).contains(a)) {
            bail!("--hash-agreement {a} is not a fraction between 0 and 1");
        }
        if let Some(n) = self.min_inliers.filter(|&n| n < 4) {
            bail!("--min-inliers {n} is below 4: three matches fit any affine transform");
        }
        Ok(())
    }

    /// The rule of the workspace `ws`: its calibration (see [`Self::rule`]), said on stderr.
    pub fn rule_in(&self, ws: &Workspace) -> Result<DupRule> {
        let calibration = Self::calibration_of(ws);
        let (rule, source) = self.rule(calibration.as_ref())?;
        if let Some(line) = rule_source_text(&rule, source, self.precision, calibration.as_ref()) {
            eprintln!("{line}");
        }
        Ok(rule)
    }

    /// [`Self::rule_in`] without saying where the rule came from (`search`, where the
    /// rule is not the subject).
    pub fn rule_quietly(&self, ws: &Workspace) -> Result<DupRule> {
        Ok(self.rule(Self::calibration_of(ws).as_ref())?.0)
    }

    fn calibration_of(ws: &Workspace) -> Option<Calibration> {
        Calibration::load(ws.root()).unwrap_or_else(|e| {
            eprintln!("ignoring the calibration ({e}); `dino-curate index` makes it again");
            None
        })
    }
}

/// What the user is told of where the rule came from (None: they set it).
pub fn rule_source_text(
    rule: &DupRule,
    source: RuleSource,
    precision: f64,
    calibration: Option<&Calibration>,
) -> Option<String> {
    let parts = format!(
        "hash agreement {}, {} keypoint inliers",
        rule.hash_agreement
            .map_or("off".to_string(), |h| format!("{h:.2}")),
        rule.min_inliers
            .map_or("off".to_string(), |n| n.to_string())
    );
    match (source, calibration) {
        (RuleSource::Calibrated(p), Some(c)) => Some(format!(
            "calibrated for precision {precision} on {} edited copies of {} of your photos: \
             {parts} (found {:.0} % of those copies)",
            c.copies,
            c.originals,
            100.0 * p.recall
        )),
        (RuleSource::NotReached, Some(c)) => Some(format!(
            "no rule reaches precision {precision} on the {} edited copies `index` calibrated \
             with (they can show {:.4} at most): {parts}, the strictest rule",
            c.copies,
            c.best_precision()
        )),
        (RuleSource::Uncalibrated, _) => Some(format!(
            "not calibrated (run `dino-curate index` on at least {MIN_PHOTOS} photos): {parts}, \
             the defaults measured on the benchmarks"
        )),
        _ => None,
    }
}

#[derive(Debug, Args)]
pub struct DupsArgs {
    #[command(flatten)]
    matching: DupMatchArgs,
    /// Which photo of a group to keep: auto (of copies the original, not a crop or a
    /// letterboxed, framed or captioned copy, then the largest, sharpest, oldest; of a burst
    /// the sharpest shot), largest, sharpest, newest, oldest or path:PREFIX.
    #[arg(long, default_value = "auto")]
    keep: KeepRule,
    /// Move every photo but the keeper of each group to the workspace trash (asks first).
    #[arg(long)]
    trash: bool,
    /// With --trash: show what would move, move nothing.
    #[arg(long, requires = "trash")]
    dry_run: bool,
    /// With --trash: do not ask for confirmation.
    #[arg(long, requires = "trash")]
    yes: bool,
    /// Compare vectors with the collection's mean removed (measured worse on the
    /// near-duplicate benchmark with the default descriptor; see docs/quality.md).
    #[arg(long)]
    centre: bool,
    /// Print the groups as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn dups(args: &DupsArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    let mut store = open_store(&ws)?;
    let rule = args.matching.rule_in(&ws)?;
    let (mut knn, linked) = candidate_graph(&mut store, GRAPH_K)?;
    let collection = Collection::load(&store)?;
    if linked {
        eprintln!(
            "{} photos: each photo's neighbours come from the graph's own links, not a \
             search (over {SEARCHED_GRAPH_LIMIT}); a few distant copies may be missed",
            collection.vectors.len()
        );
    }
    if rule.hash_agreement.is_some() && !collection.scans_all_hashes() {
        eprintln!(
            "{} photos: perceptual hashes are compared along the model's neighbour graph only \
             (all pairs up to {HASH_SCAN_LIMIT})",
            collection.vectors.len()
        );
    }
    if rule.min_inliers.is_some() && !collection.keys_all_keypoints() {
        eprintln!(
            "{} photos: crops are found through the model's neighbours only, not also through \
             shared keypoints (up to {KEYPOINT_SCAN_LIMIT})",
            collection.vectors.len()
        );
    }
    if rule.min_inliers.is_some() {
        let unverifiable = collection.without_keypoints(&store)?;
        if unverifiable > 0 {
            eprintln!(
                "{unverifiable} photos have no keypoints yet (indexed by an older version): \
                 run `dino-curate index` to verify them; until then the model's similarity \
                 links them"
            );
        }
    }
    let (collection, groups) =
        collection.duplicates_from_graph(&mut knn, args.centre, &rule, &args.keep, Some(&store));
    if args.json {
        let list: Vec<Value> = groups.iter().map(|g| group_json(&collection, g)).collect();
        print_json(&Value::Array(list))?;
    } else {
        for g in &groups {
            let kind = g.kind.name();
            println!("{kind}: keep {}", path_of(&collection, g.keep).display());
            for m in &g.members {
                println!(
                    "  {:.3} {} ({})",
                    m.similarity,
                    path_of(&collection, m.id).display(),
                    evidence_text(&collection, m)
                );
            }
        }
    }
    let extra: usize = groups.iter().map(|g| g.members.len()).sum();
    eprintln!(
        "{} groups, {extra} photos besides their keepers",
        groups.len()
    );
    if args.trash {
        let files: Vec<PathBuf> = groups
            .iter()
            .flat_map(|g| g.members.iter().map(|m| path_of(&collection, m.id)))
            .collect();
        move_to_trash(&ws, &store, &files, args.dry_run, args.yes, false)?;
    }
    Ok(())
}

/// One `dups --json` group: kind, keeper, members with their evidence.
fn group_json(collection: &Collection, g: &DupGroup) -> Value {
    let mut obj = serde_json::Map::new();
    obj.insert("kind".into(), json!(g.kind.name()));
    obj.extend(path_fields("keep", &path_of(collection, g.keep)));
    let members: Vec<Value> = g
        .members
        .iter()
        .map(|m| {
            let mut o = path_fields("path", &path_of(collection, m.id));
            o.insert("similarity".into(), json!(m.similarity));
            o.insert("evidence".into(), json!(m.evidence.name()));
            o.insert("score".into(), json!(m.score));
            if m.evidence == Evidence::Verified {
                o.insert("inliers".into(), json!(m.inliers));
            }
            let linked = path_of(collection, m.linked_to);
            o.insert("linked_to".into(), json!(linked.to_string_lossy()));
            Value::Object(o)
        })
        .collect();
    obj.insert("members".into(), Value::Array(members));
    Value::Object(obj)
}

/// "hash 0.82 with a.jpg", "descriptor 0.993 with b.jpg", "exact copy of a.jpg".
fn evidence_text(collection: &Collection, m: &DupMember) -> String {
    let with = path_of(collection, m.linked_to);
    let name = with
        .file_name()
        .unwrap_or(with.as_os_str())
        .to_string_lossy();
    match m.evidence {
        Evidence::Exact => format!("exact copy of {name}"),
        Evidence::Hash => format!("hash {:.2} with {name}", m.score),
        Evidence::Descriptor => format!("descriptor {:.3} with {name}", m.score),
        Evidence::Verified => format!("{} keypoints line up with {name}", m.inliers),
    }
}

/// Plans, confirms and performs a move to the trash.
fn move_to_trash(
    ws: &Workspace,
    store: &Store,
    files: &[PathBuf],
    dry_run: bool,
    yes: bool,
    json: bool,
) -> Result<()> {
    if files.is_empty() {
        eprintln!("nothing to move");
        return Ok(());
    }
    let trash = Trash::new(ws.root());
    let plan = trash.plan(files, &ws.config()?.roots)?;
    if dry_run {
        for (from, to) in &plan.files {
            eprintln!("would move {} -> {}", from.display(), to.display());
        }
        return print_moved(&plan, json, true);
    }
    if !yes && !confirm(&format!("move {} photos to the trash?", plan.files.len()))? {
        bail!("nothing moved");
    }
    let moved = trash.remove(&plan, store)?;
    eprintln!(
        "moved {} photos to the trash (`dino-curate undo` puts them back)",
        moved.files.len()
    );
    print_moved(&moved, json, false)
}

fn print_moved(moved: &Moved, json: bool, dry_run: bool) -> Result<()> {
    if json {
        let files: Vec<Value> = moved
            .files
            .iter()
            .map(|(from, to)| {
                let mut m = path_fields("from", from);
                m.extend(path_fields("to", to));
                Value::Object(m)
            })
            .collect();
        print_json(&json!({"operation": moved.operation, "dry_run": dry_run, "moved": files}))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct TrashArgs {
    /// Photos to move to the workspace trash.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Show what would move, move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Print what moved as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn trash(args: &TrashArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    let store = open_store(&ws)?;
    let files = args
        .paths
        .iter()
        .map(|p| std::path::absolute(p).with_context(|| format!("{}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    move_to_trash(&ws, &store, &files, args.dry_run, args.yes, args.json)
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// Print what moved back as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn undo(args: &UndoArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    let store = open_store(&ws)?;
    match Trash::new(ws.root()).undo(&store)? {
        None => {
            eprintln!("nothing to undo");
            if args.json {
                print_json(&json!({"operation": null, "moved": []}))?;
            }
        }
        Some(moved) => {
            eprintln!("restored {} photos", moved.files.len());
            print_moved(&moved, args.json, false)?;
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ClustersArgs {
    /// Number of clusters (default: about √(photos/2)).
    #[arg(short, long)]
    k: Option<usize>,
    /// Write one folder of symbolic links per cluster here.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// Random seed of the k-means++ initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the clusters as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn clusters(args: &ClustersArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    super::models::warn_if_not_semantic(&ws);
    let store = open_store(&ws)?;
    let c = Collection::load(&store)?;
    let k = args.k.unwrap_or_else(|| default_k(c.vectors.len()));
    let clusters = c.clusters(k, args.seed);
    if let Some(dir) = &args.export {
        export_clusters(dir, &c, &clusters)?;
    }
    if args.json {
        let list: Vec<Value> = clusters
            .iter()
            .enumerate()
            .map(|(i, (cl, ids))| {
                let mut obj = serde_json::Map::new();
                obj.insert("id".into(), json!(i));
                obj.insert("size".into(), json!(ids.len()));
                obj.insert("cohesion".into(), json!(cl.cohesion));
                let rep = path_of(&c, c.vectors.id(cl.representative));
                obj.insert("representative".into(), json!(rep.to_string_lossy()));
                let members: Vec<Value> = ids
                    .iter()
                    .map(|&id| json!(path_of(&c, id).to_string_lossy()))
                    .collect();
                obj.insert("members".into(), Value::Array(members));
                Value::Object(obj)
            })
            .collect();
        print_json(&Value::Array(list))?;
    } else {
        for (i, (cl, ids)) in clusters.iter().enumerate() {
            let rep = path_of(&c, c.vectors.id(cl.representative));
            println!("{i:>4} {:>6} photos  {}", ids.len(), rep.display());
        }
    }
    Ok(())
}

fn export_clusters(
    dir: &Path,
    c: &Collection,
    clusters: &[(dino_curate::curate::clusters::Cluster, Vec<PhotoId>)],
) -> Result<()> {
    for (i, (_, ids)) in clusters.iter().enumerate() {
        let sub = dir.join(format!("cluster-{i:04}"));
        std::fs::create_dir_all(&sub).with_context(|| format!("{}", sub.display()))?;
        link_all(&sub, ids.iter().map(|&id| path_of(c, id)), false)?;
    }
    eprintln!("{} cluster folders in {}", clusters.len(), dir.display());
    Ok(())
}

/// Links (or copies) each file into `dir`, numbering names that collide.
fn link_all(dir: &Path, files: impl Iterator<Item = PathBuf>, copy: bool) -> Result<()> {
    for (n, file) in files.enumerate() {
        let name = file
            .file_name()
            .map(|s| s.to_os_string())
            .unwrap_or_default();
        let mut target = dir.join(&name);
        if target.exists() || target.symlink_metadata().is_ok() {
            let mut numbered = std::ffi::OsString::from(format!("{n:06}-"));
            numbered.push(&name);
            target = dir.join(numbered);
        }
        let done = if copy {
            std::fs::copy(&file, &target).map(|_| ())
        } else {
            std::os::unix::fs::symlink(&file, &target)
        };
        done.with_context(|| format!("{} -> {}", file.display(), target.display()))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct OutliersArgs {
    /// How many to list.
    #[arg(short, long, default_value_t = 20)]
    n: usize,
    /// Print them as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn outliers(args: &OutliersArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    super::models::warn_if_not_semantic(&ws);
    let mut store = open_store(&ws)?;
    let c = Collection::load(&store)?;
    let knn = store.knn_graph(GRAPH_K)?;
    let list = c.outliers(&knn, args.n);
    print_scored(&c, &list, "score", args.json)
}

fn print_scored(c: &Collection, list: &[(PhotoId, f32)], key: &str, json: bool) -> Result<()> {
    if json {
        let v: Vec<Value> = list
            .iter()
            .map(|&(id, s)| {
                let mut m = path_fields("path", &path_of(c, id));
                m.insert(key.into(), json!(s));
                Value::Object(m)
            })
            .collect();
        print_json(&Value::Array(v))
    } else {
        for &(id, s) in list {
            println!("{s:.3} {}", path_of(c, id).display());
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// How many photos to pick.
    n: usize,
    /// Put symbolic links to the picked photos in this folder.
    #[arg(long, value_name = "DIR", conflicts_with = "copy_to")]
    link_to: Option<PathBuf>,
    /// Put copies of the picked photos in this folder.
    #[arg(long, value_name = "DIR")]
    copy_to: Option<PathBuf>,
    /// Print them as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn select(args: &SelectArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    super::models::warn_if_not_semantic(&ws);
    let store = open_store(&ws)?;
    let c = Collection::load(&store)?;
    let picked = c.diverse(args.n);
    for (dir, copy) in [(&args.link_to, false), (&args.copy_to, true)] {
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
            link_all(dir, picked.iter().map(|&(id, _)| path_of(&c, id)), copy)?;
        }
    }
    print_scored(&c, &picked, "nearest_chosen_similarity", args.json)
}

#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Print the flagged photos as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn quality(args: &QualityArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    let store = open_store(&ws)?;
    let mut flagged = Vec::new();
    for entry in store.photos() {
        let (_, r) = entry?;
        let f = flags(&r);
        if !f.is_empty() {
            flagged.push((r, f));
        }
    }
    flagged.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    if args.json {
        let v: Vec<Value> = flagged
            .iter()
            .map(|(r, f)| {
                let mut m = path_fields("path", &r.path);
                m.insert("flags".into(), json!(f));
                m.insert(
                    "stats".into(),
                    json!(r.stats.map(|s| json!({
                    "laplacian_var": s.laplacian_var, "mean_luma": s.mean_luma,
                    "dark_fraction": s.dark_fraction, "bright_fraction": s.bright_fraction,
                    "entropy": s.entropy}))),
                );
                Value::Object(m)
            })
            .collect();
        print_json(&Value::Array(v))?;
    } else {
        for (r, f) in &flagged {
            let names: Vec<String> = f.iter().map(|x| format!("{x:?}").to_lowercase()).collect();
            println!("{:<24} {}", names.join(","), r.path.display());
        }
    }
    eprintln!("{} photos flagged", flagged.len());
    Ok(())
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Any image file, in the collection or not.
    image: PathBuf,
    /// How many photos to list: the image's copies first (found as `dups` finds them),
    /// then the most similar photos.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// What counts as a copy: the rule `dups` uses.
    #[command(flatten)]
    matching: DupMatchArgs,
    /// Where to compute the query's vector.
    #[arg(long, value_enum, default_value = "auto")]
    device: super::DeviceArg,
    /// Print the list as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn search(args: &SearchArgs, workspace: Option<&Path>) -> Result<()> {
    let ws = Workspace::open(workspace)?;
    super::models::warn_if_not_semantic(&ws);
    let mut store = open_store(&ws)?;
    let device = super::device_from(args.device)?;
    let embedder = super::index::indexed_model(&ws, &store, &device)?;
    let rule = args.matching.rule_quietly(&ws)?;
    let mut query = QueryPhoto::of_file(&embedder, &args.image)?;
    // the query itself, when indexed, is not one of its results
    let absolute = std::path::absolute(&args.image)?;
    query.id = store.get_by_path(&absolute)?.map(|(id, _)| id);
    let found = dino_curate::curate::search::search(&mut store, &query, &rule, args.k)?;
    let copies = found.copies.len();
    let hits = found.top(args.k);
    let list: Vec<(PathBuf, &SearchHit)> = hits
        .iter()
        .filter_map(|h| Some((store.get(h.id).ok()??.path, h)))
        .collect();
    if args.json {
        let v: Vec<Value> = list.iter().map(|(p, h)| search_hit_json(p, h)).collect();
        print_json(&Value::Array(v))?;
    } else {
        for (p, h) in &list {
            println!("{:<18} {}", h.label(), p.display());
        }
    }
    if copies > args.k {
        eprintln!(
            "{copies} copies found, {} listed: -k {copies} lists them all",
            args.k
        );
    }
    Ok(())
}

/// One `search --json` result: path, similarity, and whether and why it is a copy.
fn search_hit_json(path: &Path, hit: &SearchHit) -> Value {
    let mut m = path_fields("path", path);
    m.insert("similarity".into(), json!(hit.similarity));
    m.insert("copy".into(), json!(hit.copy.is_some()));
    if let Some(c) = &hit.copy {
        m.insert("evidence".into(), json!(c.evidence.name()));
        m.insert("score".into(), json!(c.score));
        m.insert("inliers".into(), json!(c.inliers));
    }
    m.insert("label".into(), json!(hit.label()));
    Value::Object(m)
}
