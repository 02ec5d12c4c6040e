//! Parity of the model core with the official PyTorch DINO, against the tensors in
//! `tests/fixtures/dino-official/` (made by the unmodified official code; how each was
//! made and the tolerances are in its `manifest.json`). Each comparison prints its
//! maximum absolute and relative error (`cargo test --release --test parity -- --nocapture`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use dino_curate::model::weights::resnet_config_from_tensors;
use dino_curate::model::weights::{backbone_tensors, load_backbone, read_weights};
use dino_curate::model::{
    Backbone, DinoHead, DinoNet, HeadConfig, ParamBuilder, ResNet, ResNetConfig, Vit, VitConfig,
};
use dino_curate::train::ema::ema_update;
use dino_curate::train::loss::{DinoLoss, LossConfig};
use dino_curate::train::optim::{AdamWConfig, Optimizer};
use dino_curate::train::schedule::cosine_scheduler;
use dino_curate::train::step::{DinoState, Gradients, StepConfig, StepSchedule};

/// The gradients of the official fixtures' first epoch: the head's last layer frozen.
const LAST_LAYER_FROZEN: StepSchedule = StepSchedule {
    epoch: 0,
    lr: 0.0,
    weight_decay: 0.0,
    momentum: 0.0,
    teacher_temp: 0.04,
    last_layer_frozen: true,
    backbone_frozen: false,
};

type Res = Result<(), Box<dyn std::error::Error>>;

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dino-official")
        .join(name)
}

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = fixture_path(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn get<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    tensors
        .get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .unwrap_or_else(|e| panic!("reading tensor: {e}"))
}

/// Asserts `|got - want| <= atol + rtol * max|want|` elementwise and prints the errors.
fn assert_close(label: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(got.dims(), want.dims(), "{label}: shape");
    let (g, w) = (values(got), values(want));
    let max_ref = w.iter().fold(0f64, |m, v| m.max(v.abs()));
    let max_err = g
        .iter()
        .zip(&w)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    let bound = atol + rtol * max_ref;
    println!(
        "parity {label}: max_abs_err {max_err:.3e}, max_abs_err/max|ref| {:.3e}, bound {bound:.1e}",
        max_err / max_ref.max(f64::MIN_POSITIVE)
    );
    assert!(
        max_err <= bound,
        "{label}: max error {max_err:e} > {bound:e}"
    );
}

fn tiny_vit_config() -> VitConfig {
    VitConfig {
        depth: 2,
        ..VitConfig::preset(dino_curate::model::VitArch::VitTiny, 16)
    }
}

fn fixture_head_config() -> HeadConfig {
    HeadConfig {
        in_dim: 192,
        out_dim: 1024,
        hidden_dim: 512,
        bottleneck_dim: 128,
        norm_last_layer: true,
        use_bn: false,
    }
}

fn fixture_vit() -> Vit {
    let pb = ParamBuilder::frozen(&Device::Cpu, 0);
    let vit = Vit::new(&pb, &tiny_vit_config()).expect("tiny ViT");
    pb.store()
        .load(&fixture("vit_weights.safetensors"), false)
        .expect("official ViT weights load");
    vit
}

/// Forward precision: |a-b| <= 1e-5 max|ref| + 1e-6 (manifest: forward_f32).
fn assert_forward(label: &str, got: &Tensor, want: &Tensor) {
    assert_close(label, got, want, 1e-6, 1e-5);
}

#[test]
fn vit_outputs_match_at_224_and_96() -> Res {
    let vit = fixture_vit();
    let io = fixture("vit_io.safetensors");
    for size in ["224", "96"] {
        let x = get(&io, &format!("x{size}"));
        let tokens = vit.forward_tokens(x, None)?;
        assert_forward(
            &format!("cls_x{size}"),
            &tokens.i((.., 0))?,
            get(&io, &format!("cls_x{size}")),
        );
        assert_forward(
            &format!("tokens_last_x{size}"),
            &tokens,
            get(&io, &format!("tokens_last_x{size}")),
        );
        let attn = vit.last_self_attention(x)?;
        assert_close(
            &format!("attn_last_x{size}"),
            &attn,
            get(&io, &format!("attn_last_x{size}")),
            1e-6,
            0.0,
        );
    }
    Ok(())
}

#[test]
fn vit_outputs_match_on_a_non_square_input() -> Res {
    let vit = fixture_vit();
    let io = fixture("vit_io.safetensors");
    let x = get(&io, "x224").narrow(3, 0, 160)?;
    assert_forward(
        "cls_x224x160",
        &vit.forward(&x, None)?,
        get(&io, "cls_x224x160"),
    );
    let cls_row = vit.last_self_attention(&x)?.i((.., .., 0))?;
    assert_close(
        "attn_last_x224x160_cls_row",
        &cls_row,
        get(&io, "attn_last_x224x160_cls_row"),
        1e-6,
        0.0,
    );
    Ok(())
}

#[test]
fn interpolated_pos_embed_matches_official_bicubic() -> Res {
    let vit = fixture_vit();
    let io = fixture("vit_io.safetensors");
    for (h, w) in [(96, 96), (224, 160), (64, 64), (32, 32)] {
        let name = format!("pos_embed_interp_{h}x{w}");
        assert_close(
            &name,
            &vit.interpolate_pos_encoding(h, w)?,
            get(&io, &name),
            1e-6,
            0.0,
        );
    }
    Ok(())
}

#[test]
fn head_output_matches() -> Res {
    let pb = ParamBuilder::frozen(&Device::Cpu, 0);
    let head = DinoHead::new(&pb, &fixture_head_config())?;
    pb.store()
        .load(&fixture("head_weights.safetensors"), false)?;
    let io = fixture("head_io.safetensors");
    let input = get(&io, "input");
    assert_forward(
        "head bottleneck_normalized",
        &head.bottleneck(input)?,
        get(&io, "bottleneck_normalized"),
    );
    assert_forward("head output", &head.forward(input)?, get(&io, "output"));
    Ok(())
}

fn fixture_loss_config() -> LossConfig {
    LossConfig {
        out_dim: 1024,
        ncrops: 8,
        warmup_teacher_temp: 0.04,
        teacher_temp: 0.07,
        warmup_teacher_temp_epochs: 3,
        epochs: 10,
        student_temp: 0.1,
        center_momentum: 0.9,
    }
}

#[test]
fn loss_centre_and_gradient_match_at_epochs_0_and_5() -> Res {
    let f = fixture("loss.safetensors");
    let student = Var::from_tensor(get(&f, "student_output"))?;
    let teacher = get(&f, "teacher_output");
    let mut loss = DinoLoss::new(fixture_loss_config(), &Device::Cpu)?;

    let temps: Vec<f64> = (0..10).map(|e| loss.teacher_temp(e)).collect();
    assert_eq!(
        temps,
        values(get(&f, "teacher_temp_schedule")),
        "teacher temperature schedule"
    );

    let l0 = loss.forward(student.as_tensor(), teacher, 0)?;
    assert_close(
        "loss_epoch0",
        &l0.reshape(1)?,
        get(&f, "loss_epoch0"),
        0.0,
        1e-5,
    );
    assert_close(
        "center_after_epoch0_call",
        loss.center(),
        get(&f, "center_after_epoch0_call"),
        1e-7,
        0.0,
    );
    let grads = l0.backward()?;
    let grad = grads
        .get(student.as_tensor())
        .ok_or("no gradient for the student output")?;
    assert_close(
        "grad_student_output_epoch0",
        grad,
        get(&f, "grad_student_output_epoch0"),
        1e-6,
        0.0,
    );

    let l5 = loss.forward(student.as_tensor(), teacher, 5)?;
    assert_close(
        "loss_epoch5",
        &l5.reshape(1)?,
        get(&f, "loss_epoch5"),
        0.0,
        1e-5,
    );
    assert_close(
        "center_after_epoch5_call",
        loss.center(),
        get(&f, "center_after_epoch5_call"),
        1e-7,
        0.0,
    );
    Ok(())
}

#[test]
fn schedules_match_exactly() -> Res {
    let f = fixture("schedules.safetensors");
    let cases = [
        ("lr", cosine_scheduler(0.000125, 1e-6, 10, 7, 2, 0.0)),
        ("wd", cosine_scheduler(0.04, 0.4, 10, 7, 0, 0.0)),
        ("momentum", cosine_scheduler(0.996, 1.0, 10, 7, 0, 0.0)),
    ];
    for (name, ours) in cases {
        let want = values(get(&f, name));
        assert_eq!(ours.len(), want.len(), "{name} length");
        let err = ours
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        println!("parity schedule {name}: max_abs_err {err:.3e}");
        assert!(err <= 1e-15, "{name}: {err:e}");
    }
    Ok(())
}

#[test]
fn backbone_only_pth_loads_the_released_layout() -> Res {
    let want = read_weights(&fixture_path(
        "full_checkpoint_teacher_backbone.safetensors",
    ))?;
    let got = backbone_tensors(read_weights(&fixture_path("backbone_only.pth"))?);
    assert_same_tensors("backbone_only.pth", &got, &want)?;
    // and it builds a working backbone of the right shape
    let backbone = load_backbone(&fixture_path("backbone_only.pth"), &Device::Cpu)?;
    let vit = backbone.vit("this test")?;
    assert_eq!(vit.config().embed_dim, 48);
    assert_eq!(vit.config().depth, 1);
    Ok(())
}

#[test]
fn full_official_checkpoint_yields_its_teacher_backbone() -> Res {
    let want = read_weights(&fixture_path(
        "full_checkpoint_teacher_backbone.safetensors",
    ))?;
    let got = backbone_tensors(read_weights(&fixture_path("full_checkpoint.pth"))?);
    assert_same_tensors("full_checkpoint.pth teacher", &got, &want)?;
    let vit = load_backbone(&fixture_path("full_checkpoint.pth"), &Device::Cpu)?;
    let x = Tensor::zeros((1, 3, 32, 48), DType::F32, &Device::Cpu)?;
    assert_eq!(vit.forward(&x, None, false)?.dims(), [1, 48]);
    Ok(())
}

fn assert_same_tensors(
    label: &str,
    got: &HashMap<String, Tensor>,
    want: &HashMap<String, Tensor>,
) -> Res {
    let mut got_names: Vec<_> = got.keys().collect();
    let mut want_names: Vec<_> = want.keys().collect();
    got_names.sort();
    want_names.sort();
    assert_eq!(got_names, want_names, "{label}: tensor names");
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.dims(), w.dims(), "{label} {name}: shape");
        assert_eq!(values(g), values(w), "{label} {name}: values");
    }
    Ok(())
}

// ---- the full training step ----

const STEP_LR: f64 = 0.001;
const STEP_WD: f64 = 0.04;
const STEP_MOMENTUM: f64 = 0.996;

fn fixture_student_tensors() -> HashMap<String, Tensor> {
    let prefixed = |file: &str, prefix: &'static str| {
        fixture(file)
            .into_iter()
            .map(move |(k, v)| (format!("{prefix}.{k}"), v))
    };
    prefixed("vit_weights.safetensors", "backbone")
        .chain(prefixed("head_weights.safetensors", "head"))
        .collect()
}

fn fixture_state() -> Result<DinoState, Box<dyn std::error::Error>> {
    let init = fixture_student_tensors();
    let student_pb = ParamBuilder::trainable(&Device::Cpu, 0);
    let student = DinoNet::new(&student_pb, &tiny_vit_config(), &fixture_head_config())?;
    student.params().load(&init, false)?;
    let teacher_pb = ParamBuilder::frozen(&Device::Cpu, 1);
    let teacher = DinoNet::new(&teacher_pb, &tiny_vit_config(), &fixture_head_config())?;
    teacher.params().copy_from(student.params())?;
    let loss = DinoLoss::new(
        LossConfig {
            ncrops: 4,
            ..fixture_loss_config()
        },
        &Device::Cpu,
    )?;
    let optimizer = Optimizer::adamw(AdamWConfig::default(), student.params().params().len());
    let cfg = StepConfig {
        n_global: 2,
        clip_grad: 3.0,
        koleo: 0.0,
        first_trained_block: None,
    };
    Ok(DinoState {
        student,
        teacher,
        loss,
        optimizer,
        cfg,
    })
}

/// Compares `(after - init) / scale` with the reference where the reference gradient is
/// not tiny (atol 1e-3), and allows up to 1.0 where it is (AdamW's first step is
/// ~lr·sign(g): ill-conditioned for |g| < 1e-6; manifest: train_step).
fn assert_update_close(
    label: &str,
    got: &Tensor,
    want: &Tensor,
    init: &Tensor,
    grad: Option<&Tensor>,
    scale: f64,
) {
    let (g, w, i) = (values(got), values(want), values(init));
    let grad = grad.map(values);
    let mut worst: f64 = 0.0;
    for k in 0..w.len() {
        let err = ((g[k] - i[k]) - (w[k] - i[k])).abs() / scale;
        let well_conditioned = grad.as_ref().is_none_or(|gr| gr[k].abs() > 1e-6);
        let bound = if well_conditioned { 1e-3 } else { 1.0 };
        assert!(
            err <= bound,
            "{label}[{k}]: update error {err:e} lr > {bound}"
        );
        if well_conditioned {
            worst = worst.max(err);
        }
    }
    println!("parity {label}: max |Δ error|/lr (well-conditioned elements) {worst:.3e}");
}

/// The four views of the official step fixture, global ones first.
fn train_step_views(f: &HashMap<String, Tensor>) -> Vec<Tensor> {
    [
        "input_global0",
        "input_global1",
        "input_local0",
        "input_local1",
    ]
    .iter()
    .map(|n| get(f, n).clone())
    .collect()
}

#[test]
fn one_training_step_matches_the_official_step() -> Res {
    let f = fixture("train_step.safetensors");
    let mut state = fixture_state()?;
    let init = state.student.params().tensors()?;
    let views = train_step_views(&f);

    let (teacher_output, student_output) = state.forward(&views, None)?;
    assert_close(
        "train teacher_output",
        &teacher_output,
        get(&f, "teacher_output"),
        1e-6,
        0.0,
    );
    assert_close(
        "train student_output",
        &student_output,
        get(&f, "student_output"),
        1e-6,
        0.0,
    );
    let loss = state.loss.forward(&student_output, &teacher_output, 0)?;
    let (grads, params) = assert_loss_and_gradients_match("train", &f, &state, &loss)?;

    state.optimizer.step(&params, &grads, STEP_LR, STEP_WD)?;
    ema_update(
        state.teacher.params(),
        state.student.params(),
        STEP_MOMENTUM,
    )?;

    let student_after = state.student.params().tensors()?;
    let teacher_after = state.teacher.params().tensors()?;
    for (name, after) in [
        ("student_after", &student_after),
        ("teacher_after", &teacher_after),
    ] {
        let scale = if name == "teacher_after" {
            (1.0 - STEP_MOMENTUM) * STEP_LR
        } else {
            STEP_LR
        };
        for (key, want) in f.iter().filter(|(k, _)| k.starts_with(&format!("{name}."))) {
            let pname = &key[name.len() + 1..];
            let (pname, rows) = match pname.strip_suffix("[:8]") {
                Some(p) => (p, Some(8)),
                None => (pname, None),
            };
            let narrow = |t: &Tensor| match rows {
                Some(r) => t.narrow(0, 0, r),
                None => Ok(t.clone()),
            };
            let got = narrow(&after[pname])?;
            let init_t = narrow(&init[pname])?;
            let grad = f.get(&format!("grad.{pname}"));
            assert_update_close(key, &got, want, &init_t, grad, scale);
        }
        check_stats(&f, name, after, &init, &params)?;
    }
    Ok(())
}

/// Gradients that passed [`assert_loss_and_gradients_match`], with their parameters.
type CheckedGradients = (Gradients, Vec<dino_curate::model::Param>);

/// `loss` and the centre after it against the official step's, then the student's clipped
/// gradients of `loss` (epoch 0 of `freeze_last_layer` 1) with the norms before and after
/// clipping; returns the gradients with the parameters for the optimizer.
fn assert_loss_and_gradients_match(
    label: &str,
    f: &HashMap<String, Tensor>,
    state: &DinoState,
    loss: &Tensor,
) -> Result<CheckedGradients, Box<dyn std::error::Error>> {
    let loss_values = loss.reshape(1)?;
    assert_close(
        &format!("{label} loss"),
        &loss_values,
        get(f, "loss"),
        0.0,
        1e-5,
    );
    assert_close(
        &format!("{label} center_after"),
        state.loss.center(),
        get(f, "center_after"),
        1e-7,
        0.0,
    );
    let (grads, norms) = state.gradients(loss, &LAST_LAYER_FROZEN)?;
    let params = state.student.params().params().to_vec();
    let norm_ref = values(get(f, "stats.grad_norm_before_clip"));
    let used_ref = values(get(f, "stats.grad_norm_used"));
    for (k, p) in params.iter().enumerate() {
        check_norm(
            &format!("grad_norm_before_clip {}", p.name),
            norms[k],
            norm_ref[k],
        );
        let used = grads[k].as_ref().map(l2).transpose()?;
        check_norm(&format!("grad_norm_used {}", p.name), used, used_ref[k]);
        if let Some(want) = f.get(&format!("grad.{}", p.name)) {
            let got = grads[k]
                .as_ref()
                .ok_or(format!("no gradient for {}", p.name))?;
            assert_close(&format!("grad.{}", p.name), got, want, 0.0, 1e-5);
        }
    }
    Ok((grads, params))
}

/// The training path (`DinoState::step`'s on the CPU): the student's head and the loss as one
/// fused op (`DinoLoss::forward_head_at`) against the same official step: loss, centre and
/// every gradient, at the composed path's tolerances.
#[test]
fn fused_head_and_loss_match_the_official_step() -> Res {
    let f = fixture("train_step.safetensors");
    let mut state = fixture_state()?;
    let views = train_step_views(&f);
    let (teacher_output, _) = state.forward(&views, None)?;
    let features = state.student.backbone_features(&views, None)?;
    let temp = state.loss.teacher_temp(0);
    let loss = state
        .loss
        .forward_head_at(&state.student.head, &features, &teacher_output, temp)?;
    assert_loss_and_gradients_match("fused", &f, &state, &loss)?;
    Ok(())
}

fn l2(t: &Tensor) -> candle_core::Result<f64> {
    Ok(f64::from(t.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?))
}

/// Norms: rtol 1e-4; NaN in the reference means "no gradient".
fn check_norm(label: &str, got: Option<f64>, want: f64) {
    match got {
        None => assert!(want.is_nan(), "{label}: no gradient, reference {want}"),
        Some(g) => assert!(
            (g - want).abs() <= 1e-4 * want.abs(),
            "{label}: {g} vs {want}"
        ),
    }
}

/// Per-tensor sums (atol 1e-3·abs_sum) and update norms (rtol 1e-4, or 1e-3·lr when the
/// tensor barely moved) after the step, for every parameter.
fn check_stats(
    f: &HashMap<String, Tensor>,
    which: &str,
    after: &HashMap<String, Tensor>,
    init: &HashMap<String, Tensor>,
    params: &[dino_curate::model::Param],
) -> Res {
    let sums = values(get(f, &format!("stats.{which}.sum")));
    let abs_sums = values(get(f, &format!("stats.{which}.abs_sum")));
    let delta_key = if which == "student_after" {
        "stats.student_delta.l2"
    } else {
        "stats.teacher_delta.l2"
    };
    let deltas = values(get(f, delta_key));
    let mut worst_delta: f64 = 0.0;
    for (k, p) in params.iter().enumerate() {
        let t = &after[&p.name];
        let sum = f64::from(t.sum_all()?.to_scalar::<f32>()?);
        assert!(
            (sum - sums[k]).abs() <= 1e-3 * abs_sums[k] + 1e-6,
            "{which}.sum {}: {sum} vs {}",
            p.name,
            sums[k]
        );
        let delta = l2(&(t - &init[&p.name])?)?;
        let err = (delta - deltas[k]).abs() / deltas[k].max(1e-12);
        assert!(
            err <= 1e-4 || (delta - deltas[k]).abs() <= 1e-3 * STEP_LR,
            "{delta_key} {}: {delta} vs {}",
            p.name,
            deltas[k]
        );
        if deltas[k] > 0.0 {
            worst_delta = worst_delta.max(err);
        }
    }
    println!("parity stats {which}: sums within 1e-3·abs_sum; worst relative delta-norm error {worst_delta:.3e}");
    Ok(())
}

#[test]
fn adamw_alone_reproduces_the_official_update() -> Res {
    let f = fixture("train_step.safetensors");
    let init = fixture_student_tensors();
    let names: Vec<String> = f
        .keys()
        .filter_map(|k| k.strip_prefix("grad.").map(str::to_owned))
        .collect();
    let pb = ParamBuilder::trainable(&Device::Cpu, 0);
    for name in &names {
        pb.param(
            name,
            init[name].shape().clone(),
            dino_curate::model::Init::Zeros,
        )?;
    }
    let store = pb.store();
    store.load(
        &init
            .iter()
            .filter(|(k, _)| names.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        false,
    )?;
    let grads: Vec<Option<Tensor>> = store
        .params()
        .iter()
        .map(|p| Some(get(&f, &format!("grad.{}", p.name)).clone()))
        .collect();
    let mut adamw = Optimizer::adamw(AdamWConfig::default(), store.params().len());
    adamw.step(store.params(), &grads, STEP_LR, STEP_WD)?;
    for p in store.params() {
        let want = get(&f, &format!("student_after.{}", p.name));
        assert_close(
            &format!("adamw alone {}", p.name),
            p.var.as_tensor(),
            want,
            2e-7,
            0.0,
        );
    }
    Ok(())
}

#[test]
fn every_trainable_parameter_receives_a_gradient() -> Res {
    let mut state = fixture_state()?;
    let dev = Device::Cpu;
    let views = vec![
        Tensor::randn(0f32, 1., (2, 3, 64, 64), &dev)?,
        Tensor::randn(0f32, 1., (2, 3, 64, 64), &dev)?,
        Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev)?,
        Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev)?,
    ];
    let (teacher_output, student_output) = state.forward(&views, None)?;
    let loss = state.loss.forward(&student_output, &teacher_output, 0)?;
    let grads = loss.backward()?;
    for p in state
        .student
        .params()
        .params()
        .iter()
        .filter(|p| p.trainable)
    {
        let g = grads
            .get(p.var.as_tensor())
            .ok_or(format!("{} received no gradient: the graph is cut", p.name))?;
        let v = values(g);
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{}: non-finite gradient",
            p.name
        );
        assert!(
            v.iter().any(|&x| x != 0.0),
            "{}: gradient is all zero",
            p.name
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ResNet and the BatchNorm head, against torchvision (tests/fixtures/resnet, made by
// scripts/make_resnet_fixtures.py; narrow widths, torchvision's classes and key names).

fn resnet_fixture(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/resnet")
        .join(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A trainable ResNet holding the fixture's initial state dict.
fn fixture_resnet(net: &str) -> Result<(ResNet, ParamBuilder), Box<dyn std::error::Error>> {
    let weights = resnet_fixture(&format!("{net}_weights.safetensors"));
    let cfg = resnet_config_from_tensors(&weights)?;
    let pb = ParamBuilder::trainable(&Device::Cpu, 0);
    let resnet = ResNet::new(&pb, &cfg)?;
    pb.store().load(&weights, false)?;
    Ok((resnet, pb))
}

/// Compares every `after.<buffer>` of the fixture with the network's buffers.
fn assert_buffers(label: &str, pb: &ParamBuilder, io: &HashMap<String, Tensor>) -> Res {
    let store = pb.store();
    let mut n = 0;
    for (key, want) in io.iter().filter(|(k, _)| k.starts_with("after.")) {
        let name = &key["after.".len()..];
        let got = store
            .tensors()?
            .remove(name)
            .ok_or(format!("no buffer {name}"))?;
        // running_var: unbiased batch variance; f32 sums in another order, through 50
        // layers for the bottleneck layout (measured up to 1.4e-5 relative there).
        assert_close(&format!("{label} {name}"), &got, want, 1e-6, 1e-4);
        n += 1;
    }
    assert_eq!(n, store.buffers().len(), "{label}: every buffer compared");
    Ok(())
}

/// Eval-mode outputs, train-mode output, input and parameter gradients, running
/// statistics after one train forward, and a second train forward.
fn check_resnet_against_torchvision(net: &str) -> Res {
    let io = resnet_fixture(&format!("{net}_io.safetensors"));
    let (resnet, pb) = fixture_resnet(net)?;
    for size in ["32", "64"] {
        let got = resnet.forward(get(&io, &format!("x{size}")), false)?;
        assert_close(
            &format!("{net} eval x{size}"),
            &got,
            get(&io, &format!("eval_out{size}")),
            1e-5,
            1e-4,
        );
    }
    let x = Var::from_tensor(get(&io, "x64"))?;
    let out = resnet.forward(x.as_tensor(), true)?;
    assert_close(
        &format!("{net} train x64"),
        &out,
        get(&io, "train_out64"),
        1e-5,
        1e-4,
    );
    let loss = (&out * get(&io, "loss_weights"))?.sum_all()?;
    let grads = loss.backward()?;
    let dx = grads.get(x.as_tensor()).ok_or("no input gradient")?;
    assert_close(
        &format!("{net} grad input"),
        dx,
        get(&io, "grad.input"),
        1e-6,
        1e-3,
    );
    for p in pb.store().params() {
        let got = grads
            .get(p.var.as_tensor())
            .ok_or(format!("no gradient for {}", p.name))?;
        let want = get(&io, &format!("grad.{}", p.name));
        assert_close(&format!("{net} grad {}", p.name), got, want, 1e-6, 1e-3);
    }
    assert_buffers(net, &pb, &io)?;
    let second = resnet.forward(get(&io, "x32"), true)?;
    // rtol 1e-3: at 32 px the last stage is 1×1, so its BatchNorms normalise 4 values per
    // channel, which amplifies f32 rounding (measured 2e-4 for the bottleneck layout).
    assert_close(
        &format!("{net} train x32 (2nd)"),
        &second,
        get(&io, "train_out32"),
        1e-5,
        1e-3,
    );
    Ok(())
}

#[test]
fn resnet18_layout_matches_torchvision_in_train_and_eval_mode() -> Res {
    check_resnet_against_torchvision("resnet18_w8")
}

#[test]
fn resnet50_layout_matches_torchvision_in_train_and_eval_mode() -> Res {
    check_resnet_against_torchvision("resnet50_w4")
}

#[test]
fn torchvision_pth_state_dict_loads_as_a_resnet_backbone() -> Res {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet/resnet18_w8.pth");
    let backbone = load_backbone(&path, &Device::Cpu)?;
    let Backbone::ResNet(resnet) = &backbone else {
        return Err("a ViT was built from a ResNet state dict".into());
    };
    assert_eq!(resnet.config().width, 8);
    assert_eq!(backbone.name(), "resnet (Basic [2, 2, 2, 2], width 8)");
    let io = resnet_fixture("resnet18_w8_io.safetensors");
    let got = backbone.forward(get(&io, "x32"), None, false)?;
    assert_close(
        "resnet18_w8.pth eval x32",
        &got,
        get(&io, "eval_out32"),
        1e-5,
        1e-4,
    );
    let err = backbone.vit("attention maps").err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("need a ViT")));
    Ok(())
}

#[test]
fn full_size_resnets_have_torchvision_key_names_and_shapes() -> Res {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet/keys.json");
    let text = std::fs::read_to_string(path)?;
    let keys: HashMap<String, HashMap<String, Vec<usize>>> = serde_json::from_str(&text)?;
    for (arch, cfg) in [
        ("resnet18", ResNetConfig::resnet18()),
        ("resnet50", ResNetConfig::resnet50()),
    ] {
        let pb = ParamBuilder::frozen(&Device::Cpu, 0);
        ResNet::new(&pb, &cfg)?;
        let ours: HashMap<String, Vec<usize>> = pb
            .store()
            .params()
            .iter()
            .chain(pb.store().buffers())
            .map(|p| (p.name.clone(), p.var.dims().to_vec()))
            .collect();
        assert_eq!(&ours, keys.get(arch).ok_or("arch missing")?, "{arch}");
        println!(
            "parity {arch}: {} state-dict entries match torchvision",
            ours.len()
        );
    }
    Ok(())
}

#[test]
fn batch_norm_head_matches_the_official_head() -> Res {
    let weights = resnet_fixture("head_bn_weights.safetensors");
    let io = resnet_fixture("head_bn_io.safetensors");
    let cfg = HeadConfig {
        in_dim: 64,
        out_dim: 256,
        hidden_dim: 128,
        bottleneck_dim: 32,
        norm_last_layer: true,
        use_bn: true,
    };
    let pb = ParamBuilder::trainable(&Device::Cpu, 0);
    let head = DinoHead::new(&pb, &cfg)?;
    pb.store().load(&weights, false)?;
    let x = Var::from_tensor(get(&io, "x"))?;
    let out = head.forward(x.as_tensor())?;
    assert_close(
        "head_bn train output",
        &out,
        get(&io, "train_out"),
        1e-5,
        1e-4,
    );
    let grads = (&out * get(&io, "loss_weights"))?.sum_all()?.backward()?;
    let dx = grads.get(x.as_tensor()).ok_or("no input gradient")?;
    // atol 1e-5: the hidden biases before a BatchNorm get a zero gradient in exact
    // arithmetic, so both sides hold rounding noise of ~1e-6 there.
    assert_close("head_bn grad input", dx, get(&io, "grad.input"), 1e-5, 1e-3);
    for p in pb.store().params().iter().filter(|p| p.trainable) {
        let got = grads
            .get(p.var.as_tensor())
            .ok_or(format!("no gradient for {}", p.name))?;
        assert_close(
            &format!("head_bn grad {}", p.name),
            got,
            get(&io, &format!("grad.{}", p.name)),
            1e-5,
            1e-3,
        );
    }
    assert_buffers("head_bn", &pb, &io)
}

/// The bf16 training path (AMX) against the official step: the same forward, loss and
/// gradients within bf16 rounding. Tolerances: outputs and loss 1e-2 of the largest
/// reference value (each product's inputs carry ≤ 2^-9 relative error, through two
/// blocks); gradient directions cosine ≥ 0.99 and norms within 5 % for every parameter
/// with a non-negligible gradient.
#[test]
fn a_bf16_training_step_stays_near_the_official_step() -> Res {
    if !dino_curate::model::ops::amx::available() {
        eprintln!("skipped: no AMX on this CPU");
        return Ok(());
    }
    let f = fixture("train_step.safetensors");
    let state = fixture_state()?;
    state.set_bf16(true);
    let views = train_step_views(&f);
    let (teacher_output, student_output) = state.forward(&views, None)?;
    let exact = get(&f, "student_output");
    assert_close(
        "bf16 teacher_output",
        &teacher_output,
        get(&f, "teacher_output"),
        0.0,
        1e-2,
    );
    assert_close("bf16 student_output", &student_output, exact, 0.0, 1e-2);
    assert!(
        values(&student_output) != values(exact),
        "the bf16 path did not run"
    );
    let mut loss_fn = state.loss.clone();
    let loss = loss_fn.forward(&student_output, &teacher_output, 0)?;
    assert_close("bf16 loss", &loss.reshape(1)?, get(&f, "loss"), 0.0, 1e-3);
    let (grads, _) = state.gradients(&loss, &LAST_LAYER_FROZEN)?;
    let norm_ref = values(get(&f, "stats.grad_norm_before_clip"));
    let params = state.student.params().params().to_vec();
    let mut worst_cosine = 1f64;
    for (k, p) in params.iter().enumerate() {
        let (Some(want), Some(got)) = (f.get(&format!("grad.{}", p.name)), grads[k].as_ref())
        else {
            continue;
        };
        if norm_ref[k] < 1e-6 {
            continue;
        }
        let (g, w) = (values(got), values(want));
        let dot: f64 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
        let (ng, nw) = (
            g.iter().map(|a| a * a).sum::<f64>().sqrt(),
            w.iter().map(|a| a * a).sum::<f64>().sqrt(),
        );
        let cosine = dot / (ng * nw).max(f64::MIN_POSITIVE);
        worst_cosine = worst_cosine.min(cosine);
        assert!(cosine >= 0.99, "grad.{}: cosine {cosine}", p.name);
        assert!(
            (ng / nw - 1.0).abs() <= 0.05,
            "grad.{}: norm {ng} vs {nw}",
            p.name
        );
    }
    println!("parity bf16 gradients: worst cosine to the official gradients {worst_cosine:.5}");
    Ok(())
}
