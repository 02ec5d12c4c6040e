//! End-to-end training on small generated photos: exact resume, bad files, an empty
//! folder, the NaN guard, and what `train` writes.

use std::path::{Path, PathBuf};

use candle_core::Device;
use dino_curate::train::checkpoint;
use dino_curate::train::config::{
    Augment, LossKind, OptimizerKind, Preset, TeacherNorm, TrainConfig,
};
use dino_curate::train::trainer::{train, TrainOptions, TrainSummary, METRICS_FILE};
use dino_curate::Error;
use image::{Rgb, RgbImage};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Distinct, deterministic pictures: gradients, stripes and a square per index.
fn picture(i: u32, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let stripe = ((x + i * 3) / (2 + i % 4)).is_multiple_of(2);
        let square = x > w / 4 && x < w / 2 + i % 7 && y > h / 3 && y < h * 3 / 4;
        let r = (x * 255 / w) as u8;
        let g = if stripe { 200 } else { (y * 255 / h) as u8 };
        let b = if square { 255 } else { (i * 40 % 256) as u8 };
        Rgb([r, g, b])
    })
}

fn photo_folder(dir: &Path, n: u32) -> TestResult {
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let ext = if i % 2 == 0 { "jpg" } else { "png" };
        picture(i, 56 + i * 3, 48 + i * 2).save(dir.join(format!("photo{i:02}.{ext}")))?;
    }
    Ok(())
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        depth: 2,
        global_size: 32,
        local_size: 16,
        local_crops: 2,
        out_dim: 64,
        head_hidden: 64,
        head_bottleneck: 32,
        batch_size: 4,
        epochs: 3,
        warmup_epochs: 1,
        checkpoint_every: 0,
        seed: 5,
        ..TrainConfig::preset(Preset::Cpu)
    }
}

fn options(
    config: TrainConfig,
    roots: Vec<PathBuf>,
    run_dir: PathBuf,
    resume: bool,
) -> TrainOptions {
    TrainOptions {
        config,
        roots,
        run_dir,
        device: Device::Cpu,
        resume,
        init: None,
        cache_bytes: 64 << 20,
        stop_after: None,
        bf16: false,
    }
}

/// [`options`] for a session interrupted after `steps` steps of the run.
fn interrupted(
    config: TrainConfig,
    roots: Vec<PathBuf>,
    run_dir: PathBuf,
    steps: u64,
) -> TrainOptions {
    TrainOptions {
        stop_after: Some(steps),
        ..options(config, roots, run_dir, false)
    }
}

fn run(opts: &TrainOptions) -> dino_curate::Result<TrainSummary> {
    train(opts, &|_, _| {}, &mut |_| {})
}

/// The same steps with the same losses (to float rounding of parallel reductions).
fn assert_same_losses(straight: &[(u64, f64)], resumed: &[(u64, f64)]) {
    assert_eq!(straight.len(), resumed.len());
    for ((step, la), (step_b, lb)) in straight.iter().zip(resumed) {
        assert_eq!(step, step_b);
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs(),
            "step {step}: {la} straight vs {lb} resumed"
        );
    }
}

/// One field of every line of `metrics.jsonl`.
fn metric(run_dir: &Path, field: &str) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(run_dir.join(METRICS_FILE))?;
    text.lines()
        .map(|l| -> Result<f64, Box<dyn std::error::Error>> {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v[field].as_f64().ok_or("missing field")?)
        })
        .collect()
}

fn losses(run_dir: &Path) -> Result<Vec<(u64, f64)>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(run_dir.join(METRICS_FILE))?;
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let step = v["step"].as_u64().ok_or("no step")?;
            let loss = v["loss"].as_f64().ok_or("no loss")?;
            Ok((step, loss))
        })
        .collect()
}

/// Trains `config` (5 steps) straight and split 3 + 2 with a resume; the losses agree.
fn check_resume_is_exact(config: TrainConfig, tmp: &Path) -> TestResult {
    let photos = tmp.join("photos");
    photo_folder(&photos, 10)?;
    let roots = vec![photos];
    // 10 photos / batch 4 = 2 steps per epoch: the break falls inside epoch 1.
    let straight = tmp.join("straight");
    let config = TrainConfig {
        max_steps: 5,
        ..config
    };
    run(&options(
        config.clone(),
        roots.clone(),
        straight.clone(),
        false,
    ))?;

    let split = tmp.join("split");
    let first = run(&interrupted(
        config.clone(),
        roots.clone(),
        split.clone(),
        3,
    ))?;
    assert_eq!((first.steps, first.planned_steps), (3, 5));
    // The resumed session's own settings do not matter: the checkpoint's plan holds.
    let other = TrainConfig {
        max_steps: 50,
        ..config
    };
    let summary = run(&options(other, roots, split.clone(), true))?;
    assert_eq!(summary.steps, 5);

    let (a, b) = (losses(&straight)?, losses(&split)?);
    assert_eq!(a.iter().map(|l| l.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_same_losses(&a, &b);
    Ok(())
}

#[test]
fn resuming_continues_exactly() -> TestResult {
    let tmp = tempfile::tempdir()?;
    check_resume_is_exact(tiny_config(), tmp.path())
}

/// SGD's momentum buffers (saved without a second moment) come back on resume: with a
/// large learning rate, a lost buffer would change the last steps' losses.
#[test]
fn resuming_an_sgd_run_continues_exactly() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let sgd = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 5.0,
        weight_decay: 5e-4,
        weight_decay_end: 5e-4,
        momentum_teacher_end: 0.99,
        momentum_teacher: 0.99,
        ..tiny_config()
    };
    check_resume_is_exact(sgd, tmp.path())
}

#[test]
fn bad_files_are_skipped_and_reported() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let photos = tmp.path().join("photos");
    photo_folder(&photos, 6)?;
    std::fs::write(photos.join("empty.jpg"), b"")?;
    std::fs::write(photos.join("notes.png"), b"not a picture at all")?;
    let full = std::fs::read(photos.join("photo00.jpg"))?;
    std::fs::write(photos.join("truncated.jpg"), &full[..full.len() / 3])?;
    let config = TrainConfig {
        max_steps: 1,
        ..tiny_config()
    };
    let summary = run(&options(
        config,
        vec![photos],
        tmp.path().join("run"),
        false,
    ))?;
    let names: Vec<&str> = summary
        .skipped
        .iter()
        .filter_map(|s| Path::new(&s.path).file_name().and_then(|n| n.to_str()))
        .collect();
    assert_eq!(summary.images, 6, "skipped: {:?}", summary.skipped);
    for bad in ["empty.jpg", "notes.png", "truncated.jpg"] {
        assert!(names.contains(&bad), "{bad} not reported: {names:?}");
    }
    assert!(summary.skipped.iter().all(|s| !s.reason.is_empty()));
    Ok(())
}

#[test]
fn every_ablation_of_the_paper_trains_and_resumes() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let photos = tmp.path().join("photos");
    photo_folder(&photos, 4)?;
    let three_steps = TrainConfig {
        max_steps: 3,
        ..tiny_config()
    };
    let ablations = [
        (
            "no-momentum-teacher",
            TrainConfig {
                no_momentum_teacher: true,
                ..three_steps.clone()
            },
        ),
        (
            "no-multi-crop",
            TrainConfig {
                local_crops: 0,
                ..three_steps.clone()
            },
        ),
        (
            "mse",
            TrainConfig {
                loss: LossKind::Mse,
                ..three_steps.clone()
            },
        ),
        (
            "sinkhorn",
            TrainConfig {
                teacher_norm: TeacherNorm::Sinkhorn,
                ..three_steps.clone()
            },
        ),
        (
            "predictor",
            TrainConfig {
                predictor: true,
                ..three_steps.clone()
            },
        ),
        (
            "curation-koleo",
            TrainConfig {
                augment: Augment::Curation,
                koleo: 0.1,
                ..three_steps.clone()
            },
        ),
    ];
    for (name, config) in ablations {
        // Interrupted after 2 of 3 steps, then resumed to the end of its plan.
        let run_dir = tmp.path().join(name);
        let summary = run(&interrupted(
            config.clone(),
            vec![photos.clone()],
            run_dir.clone(),
            2,
        ))
        .map_err(|e| format!("{name}: {e}"))?;
        assert_eq!(summary.steps, 2, "{name}");
        assert!(summary.last_loss.is_some_and(f32::is_finite), "{name}");
        let resumed = run(&options(config, vec![photos.clone()], run_dir, true))
            .map_err(|e| format!("{name} resumed: {e}"))?;
        assert_eq!(resumed.steps, 3, "{name}");
    }
    Ok(())
}

/// A time budget is turned into a step count after the calibration steps; the plan is
/// stored, so resuming reproduces exactly the run a fresh start with that plan makes.
#[test]
fn a_time_budget_is_planned_once_and_resumes_exactly() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let photos = tmp.path().join("photos");
    photo_folder(&photos, 40)?;
    let roots = vec![photos];
    let timed = TrainConfig {
        time_budget_s: 4.0,
        checkpoint_every: 0,
        ..tiny_config()
    };
    let split = tmp.path().join("split");
    // 40 photos / batch 4 = 10 steps per epoch: calibration (5 steps) ends first.
    let first = run(&interrupted(timed, roots.clone(), split.clone(), 7))?;
    assert_eq!(first.steps, 7);
    let planned = checkpoint::load(&first.checkpoint, &Device::Cpu)?.config;
    assert_eq!(planned.calibration_steps, 5);
    assert!(planned.planned_steps > 5, "{}", planned.planned_steps);
    let end = planned.planned_steps.min(12);
    let fixed = TrainConfig {
        planned_steps: end,
        ..planned.clone()
    };
    let straight = tmp.path().join("straight");
    run(&options(
        fixed.clone(),
        roots.clone(),
        straight.clone(),
        false,
    ))?;
    // resume the split run against the same (shortened) plan
    let split_fixed = tmp.path().join("split-fixed");
    run(&interrupted(
        fixed.clone(),
        roots.clone(),
        split_fixed.clone(),
        7,
    ))?;
    let resumed = run(&options(fixed, roots, split_fixed.clone(), true))?;
    assert_eq!((resumed.steps, resumed.planned_steps), (end, end));
    assert_same_losses(&losses(&straight)?, &losses(&split_fixed)?);
    // the calibration steps ran at learning rate 0, the schedules start after them
    let lrs = metric(&split, "lr")?;
    assert!(lrs[..5].iter().all(|&lr| lr == 0.0), "{lrs:?}");
    Ok(())
}

#[test]
fn prototypes_default_to_the_collection_size() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let photos = tmp.path().join("photos");
    photo_folder(&photos, 4)?;
    let run_dir = tmp.path().join("run");
    let config = TrainConfig {
        out_dim: 0,
        max_steps: 1,
        ..tiny_config()
    };
    let summary = run(&options(config, vec![photos], run_dir, false))?;
    let ckpt = checkpoint::load(&summary.checkpoint, &Device::Cpu)?;
    assert_eq!(ckpt.config.out_dim, 4096);
    Ok(())
}

#[test]
fn an_empty_folder_is_a_clear_error() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos)?;
    std::fs::write(photos.join("readme.txt"), b"no photos here")?;
    let err = run(&options(
        tiny_config(),
        vec![photos],
        tmp.path().join("run"),
        false,
    ))
    .err()
    .ok_or("training on an empty folder succeeded")?;
    let msg = err.to_string();
    assert!(msg.contains("no usable photo"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    Ok(())
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let photos = tmp.path().join("photos");
    photo_folder(&photos, 8)?;
    let run_dir = tmp.path().join("run");
    let good = TrainConfig {
        max_steps: 2,
        checkpoint_every: 1,
        ..tiny_config()
    };
    run(&options(
        good.clone(),
        vec![photos.clone()],
        run_dir.clone(),
        false,
    ))?;
    let before = std::fs::read(run_dir.join("checkpoint.safetensors"))?;

    // An infinite learning rate turns the weights into NaN at the next update.
    let bad = TrainConfig {
        lr: f64::INFINITY,
        max_steps: 6,
        ..good
    };
    let err = run(&options(bad, vec![photos], run_dir.clone(), false))
        .err()
        .ok_or("a NaN run succeeded")?;
    assert!(matches!(err, Error::Diverged(_)), "{err}");
    assert!(err.to_string().contains("checkpoint"), "{err}");
    // The checkpoint on disk is still one with finite weights.
    let after = std::fs::read(run_dir.join("checkpoint.safetensors"))?;
    let tensors = candle_core::safetensors::load_buffer(&after, &Device::Cpu)?;
    for (name, t) in tensors.iter().filter(|(n, _)| n.starts_with("student.")) {
        let s = t.sum_all()?.to_scalar::<f32>()?;
        assert!(s.is_finite(), "{name} saved non-finite");
    }
    assert!(before == after, "the good checkpoint was replaced");
    Ok(())
}

/// Tensors of a checkpoint under `prefix`, as flat vectors.
fn tensors_under(
    ckpt: &Path,
    prefix: &str,
) -> Result<std::collections::HashMap<String, Vec<f32>>, Box<dyn std::error::Error>> {
    let mut out = std::collections::HashMap::new();
    for (name, t) in dino_curate::model::weights::read_weights(ckpt)? {
        if let Some(short) = name.strip_prefix(prefix) {
            out.insert(short.to_owned(), t.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(out)
}

/// An adaptation's mechanics: both backbones start from the given weights; in the frozen
/// share only the head moves; afterwards only the last `train_blocks` blocks and the final
/// norm do, the patch embedding and earlier blocks never.
#[test]
fn adaptation_freezes_the_backbone_first_then_trains_only_the_last_blocks() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let photos = tmp.path().join("photos");
    photo_folder(&photos, 8)?;
    let config = TrainConfig {
        max_steps: 4,
        freeze_backbone_share: 0.5,
        train_blocks: 1,
        ..tiny_config()
    };
    let start = {
        let pb = dino_curate::model::ParamBuilder::frozen(&Device::Cpu, 99);
        dino_curate::model::Backbone::new(&pb, &config.backbone(false))?;
        let path = tmp.path().join("start.safetensors");
        dino_curate::model::weights::save_safetensors(&pb.store().tensors()?, &path)?;
        path
    };
    let init: std::collections::HashMap<String, Vec<f32>> = tensors_under(&start, "")?;
    let run_dir = tmp.path().join("run");
    let session = |stop_after: Option<u64>, resume: bool| TrainOptions {
        init: Some(start.clone()),
        stop_after,
        ..options(
            config.clone(),
            vec![photos.clone()],
            run_dir.clone(),
            resume,
        )
    };
    let head_before: std::collections::HashMap<String, Vec<f32>> = {
        let state = dino_curate::train::step::DinoState::new(&config, &Device::Cpu)?;
        let mut out = std::collections::HashMap::new();
        for (name, t) in state.student.params().tensors()? {
            if let Some(short) = name.strip_prefix("head.") {
                out.insert(short.to_owned(), t.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        out
    };
    let summary = run(&session(Some(2), false))?;
    let student = tensors_under(&summary.checkpoint, "student.backbone.")?;
    let teacher = tensors_under(&summary.checkpoint, "teacher.backbone.")?;
    assert_eq!(student.len(), init.len());
    for (name, values) in &init {
        assert_eq!(
            &student[name], values,
            "{name} moved while the backbone was frozen"
        );
        let drift = teacher[name]
            .iter()
            .zip(values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(drift < 1e-5, "teacher {name} drifted by {drift}");
    }
    let head = tensors_under(&summary.checkpoint, "student.head.")?;
    assert_eq!(head.len(), head_before.len());
    assert!(
        head.iter().any(|(name, v)| head_before[name] != *v),
        "the head did not train"
    );

    let summary = run(&session(None, true))?;
    assert_eq!(summary.steps, 4);
    let student = tensors_under(&summary.checkpoint, "student.backbone.")?;
    for (name, values) in &init {
        let trains = name.starts_with("blocks.1.") || name.starts_with("norm.");
        let moved = &student[name] != values;
        let bias_or_weight = name.ends_with("weight");
        if trains && bias_or_weight {
            assert!(moved, "{name} should train");
        }
        if !trains {
            assert!(!moved, "{name} should stay frozen");
        }
    }
    Ok(())
}
