//! The networks: ViT or ResNet backbone, DINO head, and their pairing as the official
//! `MultiCropWrapper`, with parameters under the official key names.

pub mod head;
pub mod interp;
pub mod isa;
pub mod layers;
pub mod ops;
pub mod params;
pub mod resnet;
pub mod vit;
pub mod weights;

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

pub use head::{DinoHead, HeadConfig};
pub use params::{Init, Param, ParamBuilder, ParamStore};
pub use resnet::{BlockKind, ResNet, ResNetConfig};
pub use vit::{Vit, VitArch, VitConfig};

use crate::{Error, Result};

/// Whether ViT linear layers compute with bf16 inputs and f32 sums where the CPU has AMX,
/// in new embedders and training runs (the binary sets it once: `--f32` turns it off).
static BF16_DEFAULT: AtomicBool = AtomicBool::new(false);

/// Sets whether embedders and training runs made from now on compute a ViT's linear
/// layers in bf16 where the CPU has AMX.
pub fn set_bf16_default(on: bool) {
    BF16_DEFAULT.store(on, Ordering::Relaxed);
}

/// Whether new embedders and training runs compute in bf16 where the CPU has AMX.
pub fn bf16_default() -> bool {
    BF16_DEFAULT.load(Ordering::Relaxed)
}

/// The backbones a run can train (`TrainConfig::arch`, `--arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// ViT-Tiny.
    VitTiny,
    /// ViT-Small.
    VitSmall,
    /// ViT-Base.
    VitBase,
    /// torchvision's ResNet-18 (512-d).
    Resnet18,
    /// torchvision's ResNet-50 (2048-d), the paper's ResNet.
    Resnet50,
}

impl Arch {
    /// The ViT size, if it is a ViT.
    pub fn vit(self) -> Option<VitArch> {
        match self {
            Arch::VitTiny => Some(VitArch::VitTiny),
            Arch::VitSmall => Some(VitArch::VitSmall),
            Arch::VitBase => Some(VitArch::VitBase),
            Arch::Resnet18 | Arch::Resnet50 => None,
        }
    }

    /// The ResNet shape, if it is a ResNet.
    pub fn resnet(self) -> Option<ResNetConfig> {
        match self {
            Arch::Resnet18 => Some(ResNetConfig::resnet18()),
            Arch::Resnet50 => Some(ResNetConfig::resnet50()),
            _ => None,
        }
    }

    /// Width of the backbone's output (CLS token or pooled features).
    pub fn out_dim(self) -> usize {
        match (self.vit(), self.resnet()) {
            (Some(v), _) => v.dims().0,
            (None, Some(r)) => r.out_dim(),
            (None, None) => unreachable!("every arch is a ViT or a ResNet"),
        }
    }
}

impl From<VitArch> for Arch {
    fn from(arch: VitArch) -> Self {
        match arch {
            VitArch::VitTiny => Arch::VitTiny,
            VitArch::VitSmall => Arch::VitSmall,
            VitArch::VitBase => Arch::VitBase,
        }
    }
}

/// The shape of either backbone.
#[derive(Debug, Clone, PartialEq)]
pub enum BackboneConfig {
    /// A Vision Transformer.
    Vit(VitConfig),
    /// A ResNet.
    ResNet(ResNetConfig),
}

impl From<&VitConfig> for BackboneConfig {
    fn from(cfg: &VitConfig) -> Self {
        BackboneConfig::Vit(cfg.clone())
    }
}

impl From<&BackboneConfig> for BackboneConfig {
    fn from(cfg: &BackboneConfig) -> Self {
        cfg.clone()
    }
}

/// The trunk of a [`DinoNet`]: a ViT (CLS token out) or a ResNet (pooled features out).
#[derive(Debug)]
pub enum Backbone {
    /// A Vision Transformer.
    Vit(Vit),
    /// A ResNet with BatchNorm.
    ResNet(ResNet),
}

impl Backbone {
    /// Builds the backbone's parameters under `pb`.
    pub fn new(pb: &ParamBuilder, cfg: &BackboneConfig) -> Result<Self> {
        Ok(match cfg {
            BackboneConfig::Vit(c) => Backbone::Vit(Vit::new(pb, c)?),
            BackboneConfig::ResNet(c) => Backbone::ResNet(ResNet::new(pb, c)?),
        })
    }

    /// The image-level features `[B, out_dim]` (CLS token or average pool). `rng`:
    /// stochastic depth (ViT students); `train`: BatchNorm with batch statistics (ResNet).
    pub fn forward(&self, x: &Tensor, rng: Option<&mut StdRng>, train: bool) -> Result<Tensor> {
        match self {
            Backbone::Vit(v) => v.forward(x, rng),
            Backbone::ResNet(r) => r.forward(x, train),
        }
    }

    /// Gradient-free forwards of a ViT compute their linear layers in bf16 where the CPU
    /// has AMX ([`Vit::set_bf16_inference`]); a ResNet ignores this.
    pub fn set_bf16_inference(&self, on: bool) {
        if let Backbone::Vit(v) = self {
            v.set_bf16_inference(on);
        }
    }

    /// Forwards with a backward, and that backward, compute a ViT's linear layers in bf16
    /// where the CPU has AMX ([`Vit::set_bf16_training`]); a ResNet ignores this.
    pub fn set_bf16_training(&self, on: bool) {
        if let Backbone::Vit(v) = self {
            v.set_bf16_training(on);
        }
    }

    /// Whether asking for bf16 products (`requested`) makes this backbone use them on
    /// `device`: a ViT on a CPU with AMX (the fused block op's own check).
    pub fn computes_bf16(&self, requested: bool, device: &candle_core::Device) -> bool {
        requested && device.is_cpu() && matches!(self, Backbone::Vit(_)) && ops::amx::available()
    }

    /// Promises that the weights never change again (see [`Vit::freeze`]).
    pub fn freeze(&self) {
        if let Backbone::Vit(v) = self {
            v.freeze();
        }
    }

    /// Width of [`Backbone::forward`]'s output.
    pub fn out_dim(&self) -> usize {
        match self {
            Backbone::Vit(v) => v.config().embed_dim,
            Backbone::ResNet(r) => r.config().out_dim(),
        }
    }

    /// Pixels per position of the output grid: a ViT's patch size, a ResNet's total
    /// stride (32).
    pub fn grid_stride(&self) -> usize {
        match self {
            Backbone::Vit(v) => v.config().patch_size,
            Backbone::ResNet(_) => 32,
        }
    }

    /// A short name for messages (`vit (384-d, patch 16)`, `resnet18`).
    pub fn name(&self) -> String {
        match self {
            Backbone::Vit(v) => {
                let c = v.config();
                format!("vit ({}-d, patch {})", c.embed_dim, c.patch_size)
            }
            Backbone::ResNet(r) => r.config().name(),
        }
    }

    /// The ViT, or an error saying that `what` needs one.
    pub fn vit(&self, what: &str) -> Result<&Vit> {
        match self {
            Backbone::Vit(v) => Ok(v),
            Backbone::ResNet(r) => Err(Error::Config(format!(
                "{what} need a ViT; this model is {}",
                r.config().name()
            ))),
        }
    }
}

/// Backbone + head, named `backbone.*` and `head.*` like the official `MultiCropWrapper`.
#[derive(Debug)]
pub struct DinoNet {
    /// The ViT or the ResNet.
    pub backbone: Backbone,
    /// The projection head on the CLS token.
    pub head: DinoHead,
    /// Ablation only: a 2-layer MLP on the student's output (`predictor.*`).
    pub predictor: Option<Predictor>,
    params: ParamStore,
}

/// `Linear(K, h) → GELU → Linear(h, K)` on the head output (the paper's "predictor"
/// ablation, as in BYOL); `h` is the head's bottleneck width.
#[derive(Debug)]
pub struct Predictor {
    hidden: layers::Linear,
    out: layers::Linear,
}

impl Predictor {
    fn new(pb: &ParamBuilder, dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            hidden: layers::Linear::new(&pb.push("0"), dim, hidden, true)?,
            out: layers::Linear::new(&pb.push("2"), hidden, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&layers::linear_gelu(&self.hidden, x)?)
    }
}

impl DinoNet {
    /// Builds both parts under `pb` (`backbone.` and `head.` prefixes).
    pub fn new(pb: &ParamBuilder, vit: &VitConfig, head: &HeadConfig) -> Result<Self> {
        Self::with_predictor(pb, vit, head, false)
    }

    /// [`DinoNet::new`], plus a predictor on the output when `predictor` is set.
    pub fn with_predictor(
        pb: &ParamBuilder,
        vit: &VitConfig,
        head_cfg: &HeadConfig,
        predictor: bool,
    ) -> Result<Self> {
        let backbone = BackboneConfig::Vit(vit.clone());
        Self::with_backbone(pb, &backbone, head_cfg, predictor)
    }

    /// A network with either backbone (and the predictor when `predictor` is set).
    pub fn with_backbone(
        pb: &ParamBuilder,
        backbone: &BackboneConfig,
        head_cfg: &HeadConfig,
        predictor: bool,
    ) -> Result<Self> {
        let backbone = Backbone::new(&pb.push("backbone"), backbone)?;
        let head = DinoHead::new(&pb.push("head"), head_cfg)?;
        let predictor = if predictor {
            let (k, h) = (head_cfg.out_dim, head_cfg.bottleneck_dim);
            Some(Predictor::new(&pb.push("predictor"), k, h)?)
        } else {
            None
        };
        Ok(Self {
            backbone,
            head,
            predictor,
            params: pb.store(),
        })
    }

    /// Every parameter of both parts, in the official order.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Head outputs for a list of views (each `[B, 3, H, W]`), concatenated view-major.
    ///
    /// As `MultiCropWrapper` does, consecutive views of the same size go through the
    /// backbone in one batch, and the head runs once on all CLS tokens. BatchNorm layers
    /// run in training mode (student and teacher alike, as in the official code).
    pub fn forward_views(&self, views: &[Tensor], rng: Option<&mut StdRng>) -> Result<Tensor> {
        Ok(self.forward_views_with_features(views, rng)?.0)
    }

    /// [`DinoNet::forward_views`] and the backbone outputs it computed on the way
    /// (`[views·B, D]`, view-major), for regularisers on the features themselves.
    pub fn forward_views_with_features(
        &self,
        views: &[Tensor],
        rng: Option<&mut StdRng>,
    ) -> Result<(Tensor, Tensor)> {
        let features = self.backbone_features(views, rng)?;
        let out = self.head.forward(&features)?;
        let out = match &self.predictor {
            Some(p) => p.forward(&out)?,
            None => out,
        };
        Ok((out, features))
    }

    /// Backbone outputs for a list of views, `[views·B, D]`, view-major (the first half of
    /// [`DinoNet::forward_views`]).
    pub fn backbone_features(
        &self,
        views: &[Tensor],
        mut rng: Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let mut cls_tokens = Vec::new();
        let mut start = 0;
        while start < views.len() {
            let size = views[start].dims();
            let end = (start..views.len())
                .find(|&i| views[i].dims()[1..] != size[1..])
                .unwrap_or(views.len());
            let batch = Tensor::cat(&views[start..end], 0)?;
            cls_tokens.push(self.backbone.forward(&batch, rng.as_deref_mut(), true)?);
            start = end;
        }
        Ok(Tensor::cat(&cls_tokens, 0)?)
    }
}
