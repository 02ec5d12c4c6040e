//! `dino-curate eval …`

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::curate::{rule_source_text, DupMatchArgs};
use super::{device_from, ArchArg, DeviceArg};
use dino_curate::calibrate::CALIBRATION_SEED;
use dino_curate::curate::vectors::dot;
use dino_curate::embed::{Descriptor, Embedder, Framing};
use dino_curate::eval::linear::{
    linear_probe, pixel_features, probe_features, LinearResult, Matrix, ProbeConfig,
};
use dino_curate::eval::neardup::{
    calibrate_on_clean_photos, each_image, evaluate, extra_candidate_recall, perceptual_hashes,
    pipeline, Hybrid, NearDupReport, NearDupSet, OperatingPoint, PipelineInput,
};
use dino_curate::eval::{
    embed_paths, knn_classify, map_photos, split_features, Features, LabelledSet, LabelledSplit,
};
use dino_curate::model::{Arch, BackboneConfig, VitConfig};
use dino_curate::phash::{self, DihedralHash, PerceptualHash};
use dino_curate::verify::{keypoints_of, Keypoints};

type HashFn = fn(&image::RgbImage) -> PerceptualHash;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Weighted k-NN accuracy of the features on DIR/train/<class>/… and DIR/test/<class>/….
    Knn(KnnArgs),
    /// Linear probe (the official protocol on frozen features) trained on DIR/train/<class>/…,
    /// scored on DIR/test/<class>/….
    Linear(LinearArgs),
    /// Pairwise precision and recall of near-duplicate detection on a benchmark made by
    /// make_neardup_bench.py (DIR/images/, DIR/groups.json, DIR/manifest.csv).
    Neardup(NearDupArgs),
}

/// Which features to evaluate (shared by the `eval` commands).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A released model (dino-vits16, dino-vits8, dino-vitb16, dino-vitb8, dino-resnet50;
    /// downloaded once), `trained` (the workspace's last trained model) or a training run
    /// folder (default: the model `index` uses, dino-vits16 unless another was chosen).
    #[arg(long, value_name = "NAME|RUN", conflicts_with_all = ["weights", "random_init"])]
    model: Option<String>,
    /// Any weights file instead (official DINO .pth, safetensors).
    #[arg(long, value_name = "FILE", conflicts_with = "random_init")]
    weights: Option<PathBuf>,
    /// Baseline: a randomly initialised backbone (--arch, --patch-size).
    #[arg(long)]
    random_init: bool,
    /// Input side in pixels (default: the run's global view size; 224 for --weights and
    /// the released models;
    /// 96 for --random-init; 32 for --pixels).
    #[arg(long, value_name = "PX")]
    size: Option<u32>,
    /// Backbone of --random-init.
    #[arg(long, value_enum, default_value = "vit-tiny")]
    arch: ArchArg,
    /// Patch size of --random-init.
    #[arg(long, default_value_t = 16)]
    patch_size: usize,
    /// The model's output that becomes the photo's vector.
    #[arg(long, value_enum, default_value = "cls")]
    descriptor: DescriptorArg,
    /// How a photo becomes the square model input.
    #[arg(long, value_enum, default_value = "crop")]
    framing: FramingArg,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

/// `--framing` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FramingArg {
    /// Shorter side resized, centre square kept (the official evaluation transform).
    Crop,
    /// The whole photo squeezed into the square.
    Whole,
}

impl From<FramingArg> for Framing {
    fn from(arg: FramingArg) -> Self {
        match arg {
            FramingArg::Crop => Framing::CentreCrop,
            FramingArg::Whole => Framing::Whole,
        }
    }
}

/// `--descriptor` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DescriptorArg {
    /// The CLS token.
    Cls,
    /// CLS ⊕ GeM-pooled patch tokens (the official copy-detection descriptor).
    ClsGem,
}

impl From<DescriptorArg> for Descriptor {
    fn from(arg: DescriptorArg) -> Self {
        match arg {
            DescriptorArg::Cls => Descriptor::Cls,
            DescriptorArg::ClsGem => Descriptor::ClsGem,
        }
    }
}

#[derive(Debug, Args)]
pub struct KnnArgs {
    /// Folder with train/<class>/ and test/<class>/ photo folders.
    dir: PathBuf,
    /// Neighbours that vote.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Vote temperature: a neighbour's weight is exp(similarity / T).
    #[arg(long, default_value_t = 0.07)]
    temperature: f64,
    #[command(flatten)]
    model: ModelArgs,
    /// Baseline: raw pixels of a --size crop.
    #[arg(long, conflicts_with_all = ["model", "weights", "random_init"])]
    pixels: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct LinearArgs {
    /// Folder with train/<class>/ and test/<class>/ photo folders.
    dir: PathBuf,
    /// Passes of SGD over the cached training features.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Samples per SGD step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Learning rate for a batch of 256 (scaled by batch size / 256, cosine to 0).
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    /// Append the last block's mean patch token to the CLS tokens of the last 4 blocks.
    #[arg(long, conflicts_with = "pixels")]
    avgpool: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// Baseline: raw pixels of a --size crop.
    #[arg(long, conflicts_with_all = ["model", "weights", "random_init"])]
    pixels: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct NearDupArgs {
    /// Benchmark folder (images/, groups.json, optionally manifest.csv).
    dir: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Baseline: raw pixels of a --size crop.
    #[arg(long, conflicts_with_all = ["model", "weights", "random_init", "phash"])]
    pixels: bool,
    /// Baseline: a 256-bit perceptual (gradient) hash, as czkawka computes it.
    #[arg(long, conflicts_with_all = ["model", "weights", "random_init", "dct_hash"])]
    phash: bool,
    /// The index's perceptual hash alone: signs of DCT coefficients after trimming borders,
    /// compared under every flip and quarter-turn.
    #[arg(long, conflicts_with_all = ["model", "weights", "random_init", "pixels"])]
    dct_hash: bool,
    /// Also count a pair whose perceptual hashes agree on at least this fraction of bits,
    /// when the descriptor's k-NN graph links them (the model's thresholds are still swept).
    #[arg(long, value_name = "AGREEMENT", conflicts_with = "phash")]
    hybrid: Option<f32>,
    /// Neighbours per photo in the k-NN graph of --hybrid (as `dups`).
    #[arg(long, default_value_t = dino_curate::curate::GRAPH_K)]
    graph_k: usize,
    /// Run `dups` stage by stage (candidates, links, groups) with its rule (--threshold,
    /// --hash-agreement, --no-hash) and --graph-k, and report each stage's recall.
    #[arg(long, conflicts_with_all = ["hybrid", "phash", "dct_hash", "pixels"])]
    dups: bool,
    #[command(flatten)]
    matching: DupMatchArgs,
    /// With --dups: also measure other candidate sources: each photo's region queries
    /// (corner and centre windows of the patch grid) at 1, 2 and 3 neighbours each (`dups`
    /// takes 3) and its mirror image as a query (not used by `dups`); cls-gem models only.
    #[arg(long, requires = "dups")]
    regions: bool,
    /// Also write each image's descriptor and perceptual hash to FILE as JSON
    /// (`{"paths", "vectors", "phash"}`), to study other scoring rules outside.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["phash", "pixels"])]
    save: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: EvalCommand, workspace: Option<&Path>) -> Result<()> {
    match cmd {
        EvalCommand::Knn(args) => super::on_compute_pool(|| knn(&args, workspace))?,
        EvalCommand::Linear(args) => super::on_compute_pool(|| linear(&args, workspace))?,
        EvalCommand::Neardup(args) => super::on_compute_pool(|| neardup(&args, workspace))?,
    }
}

fn embedder(
    args: &ModelArgs,
    workspace: Option<&Path>,
    device: &candle_core::Device,
) -> Result<Embedder> {
    let embedder = base_embedder(args, workspace, device)?;
    Ok(embedder
        .with_descriptor(args.descriptor.into())
        .with_framing(args.framing.into()))
}

fn base_embedder(
    args: &ModelArgs,
    workspace: Option<&Path>,
    device: &candle_core::Device,
) -> Result<Embedder> {
    if let Some(weights) = &args.weights {
        return Ok(Embedder::from_weights(
            weights,
            args.size.unwrap_or(224),
            device,
        )?);
    }
    if args.random_init {
        let arch: Arch = args.arch.into();
        let cfg = match (arch.vit(), arch.resnet()) {
            (Some(vit), _) => BackboneConfig::Vit(VitConfig::preset(vit, args.patch_size)),
            (None, Some(resnet)) => BackboneConfig::ResNet(resnet),
            (None, None) => unreachable!("every arch is a ViT or a ResNet"),
        };
        return Ok(Embedder::random(&cfg, args.size.unwrap_or(96), 0, device)?);
    }
    let embedder = super::models::open_named(args.model.as_deref(), workspace, device)?;
    Ok(match args.size {
        Some(size) => embedder.with_size(size),
        None => embedder,
    })
}

fn progress_bar() -> ProgressBar {
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{prefix} {wide_bar} {pos}/{len} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

fn knn(args: &KnnArgs, workspace: Option<&Path>) -> Result<()> {
    let device = device_from(args.model.device)?;
    let set = LabelledSet::open(&args.dir)?;
    let model;
    let features = if args.pixels {
        Features::Pixels {
            size: args.model.size.unwrap_or(32),
        }
    } else {
        model = embedder(&args.model, workspace, &device)?;
        Features::Model(&model)
    };
    let bar = progress_bar();
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    bar.set_prefix("train");
    let train = split_features(&set.train, &features, &device, &mut progress)?;
    bar.set_prefix("test");
    let test = split_features(&set.test, &features, &device, &mut progress)?;
    bar.finish_and_clear();
    let result = knn_classify(
        &train,
        &set.train.labels,
        &test,
        &set.test.labels,
        args.k,
        args.temperature,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "k-NN (k={}) on {} classes: top-1 {:.3}, top-5 {:.3} ({} train, {} test photos)",
            result.k,
            set.classes.len(),
            result.top1,
            result.top5,
            result.n_train,
            result.n_test
        );
    }
    Ok(())
}

fn linear(args: &LinearArgs, workspace: Option<&Path>) -> Result<()> {
    if matches!(args.model.descriptor, DescriptorArg::ClsGem) {
        bail!("--descriptor does not apply to eval linear: the probe reads the CLS tokens of the last 4 blocks (--avgpool adds the mean patch token)");
    }
    let device = device_from(args.model.device)?;
    let set = LabelledSet::open(&args.dir)?;
    let model = if args.pixels {
        None
    } else {
        Some(embedder(&args.model, workspace, &device)?)
    };
    let features = |split: &LabelledSplit, name: &str| -> Result<Matrix> {
        let bar = progress_bar();
        bar.set_prefix(name.to_string());
        let mut progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let rows = match &model {
            Some(m) => map_photos(
                &split.paths,
                m.size(),
                |images| probe_features(m, images, args.avgpool),
                &mut progress,
            )?,
            None => {
                let size = args.model.size.unwrap_or(32);
                map_photos(
                    &split.paths,
                    size,
                    |images| pixel_features(images, size, &device),
                    &mut progress,
                )?
            }
        };
        bar.finish_and_clear();
        Ok(Matrix::from_tensor(&rows)?)
    };
    let train = features(&set.train, "train")?;
    let test = features(&set.test, "test")?;
    let cfg = ProbeConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        ..ProbeConfig::default()
    };
    let result = linear_probe(
        &train,
        &set.train.labels,
        &test,
        &set.test.labels,
        set.classes.len(),
        &cfg,
    )?;
    print_linear(&result, set.classes.len(), args.json)
}

fn print_linear(result: &LinearResult, classes: usize, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(result)?);
    } else {
        println!(
            "linear probe ({} epochs, {}-d features) on {classes} classes: top-1 {:.3}, top-5 {:.3} ({} train, {} test photos)",
            result.epochs, result.dim, result.top1, result.top5, result.n_train, result.n_test
        );
    }
    Ok(())
}

fn neardup(args: &NearDupArgs, workspace: Option<&Path>) -> Result<()> {
    let set = NearDupSet::open(&args.dir)?;
    let bar = progress_bar();
    bar.set_prefix("describe");
    let hash_baseline = if args.phash {
        Some(("phash-gradient-256", phash::gradient_hash as HashFn))
    } else if args.dct_hash {
        Some(("dct-sign-256-dihedral", phash::perceptual_hash as HashFn))
    } else {
        None
    };
    let report = if let Some((method, hash)) = hash_baseline {
        let hashes = perceptual_hashes(&set, hash, &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })?;
        bar.finish_and_clear();
        if args.dct_hash {
            let forms: Vec<DihedralHash> = hashes.iter().map(DihedralHash::new).collect();
            evaluate(&set, method, |i, j| forms[i].agreement(&forms[j]))
        } else {
            evaluate(&set, method, |i, j| {
                phash::agreement(&hashes[i], &hashes[j])
            })
        }
    } else {
        let device = device_from(args.model.device)?;
        let model;
        let (features, method) = if args.pixels {
            let size = args.model.size.unwrap_or(32);
            (Features::Pixels { size }, format!("pixels-{size}px"))
        } else {
            model = embedder(&args.model, workspace, &device)?;
            let method = format!(
                "{}-{}-{}px",
                model.descriptor().name(),
                model.framing().name(),
                model.size()
            );
            (Features::Model(&model), method)
        };
        let mut progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let vectors = embed_paths(&set.paths, &features, &device, &mut progress)?;
        bar.finish_and_clear();
        let rows = vectors.to_vec2::<f32>()?;
        if let Some(file) = &args.save {
            save_descriptors(&set, &rows, file)?;
        }
        if args.dups {
            return dups_stages(&set, &rows, &method, &features, args);
        }
        match args.hybrid {
            None => evaluate(&set, &method, |i, j| dot(&rows[i], &rows[j])),
            Some(agreement) => hybrid(&set, &rows, &method, agreement, args.graph_k)?,
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_neardup(&report);
    }
    Ok(())
}

/// `eval neardup --dups`: the `dups` pipeline's stages on the benchmark.
fn dups_stages(
    set: &NearDupSet,
    rows: &[Vec<f32>],
    method: &str,
    features: &Features,
    args: &NearDupArgs,
) -> Result<()> {
    let verifying = !args.matching.skips_verification();
    let signals = each_image(
        set,
        |img| {
            let points = verifying.then(|| keypoints_of(img));
            (phash::perceptual_hash(img), points)
        },
        &|_, _| {},
    )?;
    let forms: Vec<DihedralHash> = signals.iter().map(|(h, _)| DihedralHash::new(h)).collect();
    let keypoints: Vec<Keypoints> = signals.into_iter().filter_map(|(_, k)| k).collect();
    let (regions, per_image) = match features {
        Features::Model(model) if model.makes_region_queries() => region_rows(set, model)?,
        _ => (Vec::new(), 0),
    };
    let input = PipelineInput {
        rows,
        hashes: &forms,
        keypoints: &keypoints,
        regions: (&regions, per_image),
    };
    let calibration = calibrate_on_clean_photos(set, &input, args.graph_k, CALIBRATION_SEED)?;
    let (rule, source) = args.matching.rule(Some(&calibration))?;
    let source_text =
        rule_source_text(&rule, source, args.matching.precision(), Some(&calibration));
    let report = pipeline(set, method, input, &rule, args.graph_k);
    if args.json {
        let mut out = serde_json::to_value(&report)?;
        out["calibration"] = serde_json::to_value(&calibration)?;
        println!("{out}");
        return Ok(());
    }
    println!(
        "calibrated on {} copies of {} of the {} clean photos ({} left out as already copied), \
         {} wrong candidate pairs",
        calibration.copies,
        calibration.originals,
        calibration.photos,
        calibration.left_out,
        calibration.wrong_candidates
    );
    if let Some(text) = source_text {
        println!("  {text}");
    }
    let edits = |e: &[dino_curate::eval::neardup::EditRecall]| {
        e.iter()
            .map(|e| format!("{} {:.2}", e.edit, e.recall))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{method}, threshold {}, hash {:?}, min inliers {:?}:",
        rule.threshold, rule.hash_agreement, rule.min_inliers
    );
    if verifying {
        println!(
            "  verified {} pairs ({:.2} per photo); links made in {:.2} s",
            report.verified_pairs,
            report.verified_pairs as f64 / set.paths.len().max(1) as f64,
            report.link_seconds
        );
    }
    for c in &report.candidates {
        println!(
            "  candidates {:<16} {:>6.1} pairs/photo, original-copy recall {:.3}, all true pairs {:.3}",
            c.source, c.pairs_per_photo, c.original_copy_recall, c.true_pair_recall
        );
        println!("    per edit: {}", edits(&c.edits));
    }
    for (name, s) in &report.links {
        println!(
            "  links {name:<10} {:>5} pairs, precision {:.3}, recall {:.3}",
            s.predicted, s.precision, s.recall
        );
    }
    let g = &report.groups;
    println!(
        "  groups {:>5} pairs, precision {:.3}, recall {:.3}",
        g.predicted, g.precision, g.recall
    );
    println!("    original-copy per edit: {}", edits(&report.group_edits));
    if args.regions {
        let Features::Model(model) = features else {
            bail!("--regions needs a model");
        };
        for c in extra_sources(set, &input, model, args)? {
            println!(
                "  candidates {:<32} {:>6.1} pairs/photo, original-copy recall {:.3}, all true pairs {:.3}",
                c.source, c.pairs_per_photo, c.original_copy_recall, c.true_pair_recall
            );
            println!("    per edit: {}", edits(&c.edits));
        }
    }
    Ok(())
}

/// Each image's region queries as rows, with how many an image has.
fn region_rows(set: &NearDupSet, model: &Embedder) -> Result<(Vec<Vec<f32>>, usize)> {
    let queries = map_photos(
        &set.paths,
        model.size(),
        |imgs| model.region_queries(imgs),
        &mut |_, _| {},
    )?;
    let (n, width) = queries.dims2()?;
    let per_image = width / model.dim().max(1);
    let rows = queries
        .reshape((n * per_image, model.dim()))?
        .to_vec2::<f32>()?;
    Ok((rows, per_image))
}

/// `--regions`: candidate recall of region queries (top 1–3, which `dups` searches) and
/// mirrored queries (not used by `dups`).
fn extra_sources(
    set: &NearDupSet,
    input: &PipelineInput,
    model: &Embedder,
    args: &NearDupArgs,
) -> Result<Vec<dino_curate::eval::neardup::CandidateRecall>> {
    let size = model.size();
    let (regions, per_image) = input.regions;
    if per_image == 0 {
        bail!("region queries need the cls-gem descriptor and a grid of at least 4 × 4");
    }
    let mirror = |imgs: &[image::RgbImage]| {
        let flipped: Vec<image::RgbImage> =
            imgs.iter().map(image::imageops::flip_horizontal).collect();
        model.embed(&flipped)
    };
    let mirrored = map_photos(&set.paths, size, mirror, &mut |_, _| {})?.to_vec2::<f32>()?;
    let hash_min = dino_curate::curate::dups::HASH_CANDIDATE_AGREEMENT;
    Ok(extra_candidate_recall(
        set,
        input,
        args.graph_k,
        hash_min,
        (regions, per_image),
        &mirrored,
    ))
}

/// Writes the benchmark's descriptors and perceptual hashes (hex) to `file` as JSON.
fn save_descriptors(set: &NearDupSet, rows: &[Vec<f32>], file: &Path) -> Result<()> {
    let hashes = perceptual_hashes(set, phash::perceptual_hash, &|_, _| {})?;
    let hex: Vec<String> = hashes
        .iter()
        .map(|h| h.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let names: Vec<String> = set
        .paths
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let json = serde_json::json!({"paths": names, "vectors": rows, "phash": hex});
    std::fs::write(file, serde_json::to_vec(&json)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

fn hybrid(
    set: &NearDupSet,
    rows: &[Vec<f32>],
    method: &str,
    agreement: f32,
    graph_k: usize,
) -> Result<NearDupReport> {
    if !(0.0..=1.0).contains(&agreement) {
        bail!("--hybrid {agreement} is not a fraction between 0 and 1");
    }
    let bar = progress_bar();
    bar.set_prefix("hash");
    let hashes = perceptual_hashes(set, phash::gradient_hash, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let hybrid = Hybrid::new(rows, graph_k, agreement);
    let method = format!("{method}+phash-{agreement}-k{graph_k}");
    Ok(evaluate(set, &method, |i, j| {
        let descriptor = dot(&rows[i], &rows[j]);
        hybrid.score(i, j, descriptor, phash::agreement(&hashes[i], &hashes[j]))
    }))
}

fn print_neardup(report: &NearDupReport) {
    println!(
        "{}: {} images, {} true pairs, average precision {:.3}",
        report.method, report.images, report.true_pairs, report.average_precision
    );
    let line = |name: &str, p: &OperatingPoint| {
        println!(
            "  {name:<10} threshold {:.3}: precision {:.3}, recall {:.3} ({} pairs)",
            p.threshold, p.precision, p.recall, p.predicted
        )
    };
    match &report.at_target_precision {
        Some(p) => line("P>=0.99", p),
        None => println!("  precision 0.99 is never reached"),
    }
    if let Some(p) = &report.best_f1 {
        line("best F1", p);
    }
    for p in &report.thresholds {
        line("", p);
    }
    let edits: Vec<String> = report
        .edits
        .iter()
        .map(|e| format!("{} {:.2}", e.edit, e.recall))
        .collect();
    println!("  recall per edit: {}", edits.join(", "));
}
