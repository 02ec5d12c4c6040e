//! Everything that defines a training run, with the CPU and GPU presets.

use serde::{Deserialize, Serialize};

use crate::model::{Arch, BackboneConfig, HeadConfig, VitConfig};
use crate::train::loss::LossConfig;
use crate::{Error, Result};

/// How the teacher's targets are normalised (paper Table 7: centring vs Sinkhorn-Knopp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherNorm {
    /// Centre then sharpen (DINO).
    #[default]
    Centering,
    /// Three Sinkhorn-Knopp iterations instead of centring.
    Sinkhorn,
}

/// The student/teacher objective (paper Table 7: cross-entropy vs MSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy between teacher and student distributions (DINO).
    #[default]
    Ce,
    /// Mean squared error between the distributions.
    Mse,
}

/// The optimizer of the student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// AdamW (the official ViT recipe).
    #[default]
    Adamw,
    /// SGD with momentum 0.9 (the official code's `--optimizer sgd`, the usual choice for
    /// ResNets).
    Sgd,
}

/// Which augmentations make the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// The paper's: crops, flip, colour jitter, grayscale, blur, solarisation.
    #[default]
    Dino,
    /// The paper's plus the edits people make to photos (rotations, aspect changes, borders
    /// and letterbox bars, text, JPEG re-encoding), for features that see through copies.
    Curation,
}

/// A complete, serialisable description of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Backbone (`vit-tiny|vit-small|vit-base|resnet18|resnet50`).
    pub arch: Arch,
    /// Patch side in pixels (ViT only).
    pub patch_size: usize,
    /// Transformer blocks (12 in every official model; fewer for quick experiments; ViT only).
    pub depth: usize,
    /// Global view side in pixels.
    pub global_size: u32,
    /// Local view side in pixels.
    pub local_size: u32,
    /// Local views per image (0 disables multi-crop).
    pub local_crops: usize,
    /// Area range of the global crops.
    pub global_scale: (f32, f32),
    /// Area range of the local crops.
    pub local_scale: (f32, f32),
    /// Augmentations of the views.
    #[serde(default)]
    pub augment: Augment,
    /// Head prototypes; 0 chooses from the collection size ([`auto_out_dim`]).
    pub out_dim: usize,
    /// Head MLP width.
    pub head_hidden: usize,
    /// Head bottleneck width.
    pub head_bottleneck: usize,
    /// Weight-normalise the head's last layer with its norm fixed at 1 (official default;
    /// `false` lets the prototypes' norms learn, which sharpens targets sooner).
    #[serde(default = "default_true")]
    pub norm_last_layer: bool,
    /// Images per step.
    pub batch_size: usize,
    /// Passes over the collection.
    pub epochs: usize,
    /// Train for this many steps, every schedule fitted to them (0: `epochs` decide).
    pub max_steps: u64,
    /// Train for this many seconds, every schedule fitted to the steps that fit in them
    /// (0: no time budget). See [`crate::train::plan`].
    #[serde(default)]
    pub time_budget_s: f64,
    /// The step count a time budget was turned into (0 until it is fixed).
    #[serde(default)]
    pub planned_steps: u64,
    /// Steps run at the starting values while a time budget measures the step time.
    #[serde(default)]
    pub calibration_steps: u64,
    /// Peak learning rate for a batch of 256 (scaled linearly with the batch).
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Linear warm-up epochs of the learning rate.
    pub warmup_epochs: usize,
    /// Weight decay at the start (cosine to `weight_decay_end`).
    pub weight_decay: f64,
    /// Weight decay at the end.
    pub weight_decay_end: f64,
    /// Teacher EMA momentum at the start (cosine to `momentum_teacher_end`).
    pub momentum_teacher: f64,
    /// Teacher EMA momentum at the end (1 officially; equal to the start: constant).
    #[serde(default = "default_momentum_teacher_end")]
    pub momentum_teacher_end: f64,
    /// The student's optimizer.
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Teacher temperature after warm-up.
    pub teacher_temp: f64,
    /// Teacher temperature at the start.
    pub warmup_teacher_temp: f64,
    /// Epochs of teacher-temperature warm-up.
    pub warmup_teacher_temp_epochs: usize,
    /// Per-tensor gradient clipping (0: off).
    pub clip_grad: f64,
    /// Epochs with the head's last layer frozen.
    pub freeze_last_layer: usize,
    /// Share of the run's first steps in which the backbone does not train (only the head
    /// and the centre move), so that a fresh head settles on a released backbone before
    /// its gradients reach it.
    #[serde(default)]
    pub freeze_backbone_share: f64,
    /// Train only the backbone's last N transformer blocks and its final norm (0: all; ViT
    /// only).
    #[serde(default)]
    pub train_blocks: usize,
    /// Student stochastic depth.
    pub drop_path: f64,
    /// Seed of every random choice (init, data order, augmentations, stochastic depth).
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at each epoch end).
    pub checkpoint_every: u64,
    /// Weight of DINOv2's KoLeo regulariser on the student's global-view features (0: off).
    #[serde(default)]
    pub koleo: f64,
    /// Ablation: the teacher copies the student every step instead of an EMA.
    pub no_momentum_teacher: bool,
    /// Ablation: teacher target normalisation.
    pub teacher_norm: TeacherNorm,
    /// Ablation: the objective.
    pub loss: LossKind,
    /// Ablation: a 2-layer MLP predictor on the student output.
    pub predictor: bool,
    /// BatchNorm in the head's hidden layers (official `--use_bn_in_head`).
    #[serde(default)]
    pub head_bn: bool,
    /// The released model this run adapts (both backbones start from it), if any.
    #[serde(default)]
    pub adapted_from: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_momentum_teacher_end() -> f64 {
    1.0
}

/// Prototypes for a collection of `images` photos: the next power of two above half the
/// collection, between 4096 and the official 65536 (reached from ~65k photos). Small
/// collections with the official 65536 spread few images over many prototypes, one of
/// the reported routes to collapse (official issues #43, #246, #279).
pub fn auto_out_dim(images: usize) -> usize {
    (images / 2).next_power_of_two().clamp(4096, 65536)
}

/// The two presets: small enough to learn on a laptop CPU, or the official GPU setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// ViT-Tiny at small resolution, tuned for small collections on 2–8 CPU cores.
    Cpu,
    /// ViT-Small/16 at 224/96 as in the paper.
    Gpu,
}

impl TrainConfig {
    /// The settings of a preset (every field can be overridden afterwards).
    pub fn preset(preset: Preset) -> Self {
        match preset {
            Preset::Cpu => Self {
                arch: Arch::VitTiny,
                patch_size: 16,
                global_size: 96,
                local_size: 48,
                local_crops: 6,
                out_dim: 0,
                batch_size: 32,
                epochs: 30,
                lr: 5e-4,
                warmup_epochs: 1,
                ..Self::official()
            },
            Preset::Gpu => Self::official(),
        }
    }

    /// The official `main_dino.py` defaults for ViT-S/16.
    fn official() -> Self {
        Self {
            arch: Arch::VitSmall,
            patch_size: 16,
            depth: 12,
            global_size: 224,
            local_size: 96,
            local_crops: 8,
            global_scale: (0.4, 1.0),
            local_scale: (0.05, 0.4),
            augment: Augment::Dino,
            out_dim: 0,
            head_hidden: 2048,
            head_bottleneck: 256,
            norm_last_layer: true,
            batch_size: 64,
            epochs: 100,
            max_steps: 0,
            time_budget_s: 0.0,
            planned_steps: 0,
            calibration_steps: 0,
            lr: 5e-4,
            min_lr: 1e-6,
            warmup_epochs: 10,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            momentum_teacher: 0.996,
            momentum_teacher_end: 1.0,
            optimizer: OptimizerKind::Adamw,
            teacher_temp: 0.04,
            warmup_teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            clip_grad: 3.0,
            freeze_last_layer: 1,
            freeze_backbone_share: 0.0,
            train_blocks: 0,
            drop_path: 0.1,
            seed: 0,
            checkpoint_every: 500,
            koleo: 0.0,
            no_momentum_teacher: false,
            teacher_norm: TeacherNorm::Centering,
            loss: LossKind::Ce,
            predictor: false,
            head_bn: false,
            adapted_from: None,
        }
    }

    /// Adapting a released backbone (`../shared/reference/pretrained-start.md`, 3.3): its
    /// architecture at 224/96 px, a fresh head that trains alone for the first tenth of
    /// the steps, a tenth of the from-scratch learning rate, teacher momentum 0.9995 → 1,
    /// and the head's last layer never frozen (LightlyTrain's advice from a pretrained
    /// start). On the CPU: 2 local crops and batch 16, to fit a 2-core machine.
    pub fn adapt(released: &str, backbone: &BackboneConfig, cpu: bool) -> Self {
        let (arch, patch_size) = match backbone {
            BackboneConfig::Vit(v) if v.embed_dim >= 768 => (Arch::VitBase, v.patch_size),
            BackboneConfig::Vit(v) => (Arch::VitSmall, v.patch_size),
            BackboneConfig::ResNet(_) => (Arch::Resnet50, 16),
        };
        Self {
            arch,
            patch_size,
            local_crops: if cpu { 2 } else { 8 },
            batch_size: if cpu { 16 } else { 64 },
            epochs: 10,
            lr: 5e-5,
            warmup_epochs: 0,
            momentum_teacher: 0.9995,
            freeze_last_layer: 0,
            freeze_backbone_share: 0.1,
            adapted_from: Some(released.to_owned()),
            ..Self::official()
        }
    }

    /// The configuration with `out_dim` chosen for `images` photos when it is 0.
    pub fn for_collection(mut self, images: usize) -> Self {
        if self.out_dim == 0 {
            self.out_dim = auto_out_dim(images);
        }
        self
    }

    /// Views per image the student sees.
    pub fn ncrops(&self) -> usize {
        2 + self.local_crops
    }

    /// The backbone's shape (a ViT student: with stochastic depth; a ResNet ignores
    /// `patch_size`, `depth` and `drop_path`).
    pub fn backbone(&self, student: bool) -> BackboneConfig {
        match (self.arch.vit(), self.arch.resnet()) {
            (Some(vit), _) => BackboneConfig::Vit(VitConfig {
                depth: self.depth,
                drop_path_rate: if student { self.drop_path } else { 0.0 },
                ..VitConfig::preset(vit, self.patch_size)
            }),
            (None, Some(resnet)) => BackboneConfig::ResNet(resnet),
            (None, None) => unreachable!("every arch is a ViT or a ResNet"),
        }
    }

    /// The head's shape.
    pub fn head(&self) -> HeadConfig {
        HeadConfig {
            in_dim: self.arch.out_dim(),
            out_dim: self.out_dim,
            hidden_dim: self.head_hidden,
            bottleneck_dim: self.head_bottleneck,
            norm_last_layer: self.norm_last_layer,
            use_bn: self.head_bn,
        }
    }

    /// The loss settings for this run.
    pub fn loss_config(&self) -> LossConfig {
        LossConfig {
            out_dim: self.out_dim,
            ncrops: self.ncrops(),
            warmup_teacher_temp: self.warmup_teacher_temp,
            teacher_temp: self.teacher_temp,
            warmup_teacher_temp_epochs: self.warmup_teacher_temp_epochs,
            epochs: self.epochs,
            student_temp: 0.1,
            center_momentum: 0.9,
        }
    }

    /// Checks the values a user can set for ones that cannot work.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.batch_size == 0 || self.epochs == 0 || self.depth == 0 {
            return fail("batch size, epochs and depth must be at least 1".into());
        }
        // A ResNet pools any size; the 7×7 stem and the stride-32 trunk need a few pixels.
        let p = if self.arch.resnet().is_some() {
            8
        } else {
            self.patch_size as u32
        };
        if p == 0 || self.global_size < p || (self.local_crops > 0 && self.local_size < p) {
            return fail(format!(
                "views ({} and {} px) must hold at least one {p}-px patch",
                self.global_size, self.local_size
            ));
        }
        if !(self.koleo >= 0.0 && self.koleo.is_finite()) {
            return fail(format!(
                "the KoLeo weight must be 0 or positive, not {}",
                self.koleo
            ));
        }
        let lr_ok = self.lr > 0.0; // false for NaN too
        let temps_ok = self.teacher_temp > 0.0 && self.warmup_teacher_temp > 0.0;
        if !lr_ok || !temps_ok {
            return fail("lr and the teacher temperatures must be positive".into());
        }
        let scale_ok = |(a, b): (f32, f32)| a > 0.0 && a <= b && b <= 1.0;
        if !scale_ok(self.global_scale) || !scale_ok(self.local_scale) {
            return fail("crop scales must satisfy 0 < min <= max <= 1".into());
        }
        if !(0.0..=1.0).contains(&self.freeze_backbone_share) {
            return fail(format!(
                "the frozen-backbone share must lie in [0, 1], not {}",
                self.freeze_backbone_share
            ));
        }
        if self.train_blocks > 0 && (self.arch.resnet().is_some() || self.train_blocks > self.depth)
        {
            return fail(format!(
                "--train-blocks {} needs a ViT of at least that many blocks",
                self.train_blocks
            ));
        }
        let (m0, m1) = (self.momentum_teacher, self.momentum_teacher_end);
        if !((0.0..=1.0).contains(&m0) && (0.0..=1.0).contains(&m1)) {
            return fail(format!(
                "teacher momentum must lie in [0, 1], not {m0} and {m1}"
            ));
        }
        if let (true, Some(resnet)) = (self.predictor, self.arch.resnet()) {
            return fail(format!(
                "the predictor ablation needs a ViT; this run is {}",
                resnet.name()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prototypes_grow_with_the_collection() {
        assert_eq!(auto_out_dim(30), 4096);
        assert_eq!(auto_out_dim(3000), 4096);
        assert_eq!(auto_out_dim(20_000), 16384);
        assert_eq!(auto_out_dim(1_000_000), 65536);
        let cfg = TrainConfig::preset(Preset::Gpu).for_collection(100_000);
        assert_eq!(cfg.out_dim, 65536);
        let fixed = TrainConfig {
            out_dim: 1024,
            ..TrainConfig::preset(Preset::Cpu)
        };
        assert_eq!(fixed.for_collection(100_000).out_dim, 1024);
    }

    #[test]
    fn presets_are_valid_and_bad_values_are_refused() {
        assert!(TrainConfig::preset(Preset::Cpu).validate().is_ok());
        assert!(TrainConfig::preset(Preset::Gpu).validate().is_ok());
        let bad = TrainConfig {
            global_size: 8,
            ..TrainConfig::preset(Preset::Cpu)
        };
        assert!(bad.validate().is_err());
        let bad = TrainConfig {
            lr: f64::NAN,
            ..TrainConfig::preset(Preset::Cpu)
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn configs_of_earlier_runs_still_read_and_resnets_round_trip() -> serde_json::Result<()> {
        let mut json = serde_json::to_value(TrainConfig::preset(Preset::Cpu))?;
        if let Some(obj) = json.as_object_mut() {
            obj.remove("head_bn"); // a config written before the field existed
        }
        let old: TrainConfig = serde_json::from_value(json)?;
        assert_eq!(old.arch, Arch::VitTiny);
        assert!(!old.head_bn);
        let resnet = TrainConfig {
            arch: Arch::Resnet50,
            head_bn: true,
            ..TrainConfig::preset(Preset::Cpu)
        };
        let text = serde_json::to_string(&resnet)?;
        assert!(text.contains("\"arch\":\"resnet50\""));
        assert_eq!(serde_json::from_str::<TrainConfig>(&text)?, resnet);
        assert_eq!(resnet.head().in_dim, 2048);
        assert!(resnet.head().use_bn);
        assert!(resnet.validate().is_ok());
        Ok(())
    }
}
