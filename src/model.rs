//! The networks: ViT backbone, DINO head, and their pairing as the official
//! `MultiCropWrapper`, with parameters under the official key names.

pub mod head;
pub mod interp;
pub mod layers;
pub mod ops;
pub mod params;
pub mod vit;
pub mod weights;

use candle_core::Tensor;
use rand::rngs::StdRng;

pub use head::{DinoHead, HeadConfig};
pub use params::{Init, Param, ParamBuilder, ParamStore};
pub use vit::{Vit, VitArch, VitConfig};

use crate::Result;

/// Backbone + head, named `backbone.*` and `head.*` like the official `MultiCropWrapper`.
#[derive(Debug)]
pub struct DinoNet {
    /// The ViT.
    pub backbone: Vit,
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
        let backbone = Vit::new(&pb.push("backbone"), vit)?;
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
    /// backbone in one batch, and the head runs once on all CLS tokens.
    pub fn forward_views(&self, views: &[Tensor], rng: Option<&mut StdRng>) -> Result<Tensor> {
        Ok(self.forward_views_with_features(views, rng)?.0)
    }

    /// [`DinoNet::forward_views`] and the backbone outputs it computed on the way
    /// (`[views·B, D]`, view-major), for regularisers on the features themselves.
    pub fn forward_views_with_features(
        &self,
        views: &[Tensor],
        mut rng: Option<&mut StdRng>,
    ) -> Result<(Tensor, Tensor)> {
        let mut cls_tokens = Vec::new();
        let mut start = 0;
        while start < views.len() {
            let size = views[start].dims();
            let end = (start..views.len())
                .find(|&i| views[i].dims()[1..] != size[1..])
                .unwrap_or(views.len());
            let batch = Tensor::cat(&views[start..end], 0)?;
            cls_tokens.push(self.backbone.forward(&batch, rng.as_deref_mut())?);
            start = end;
        }
        let features = Tensor::cat(&cls_tokens, 0)?;
        let out = self.head.forward(&features)?;
        let out = match &self.predictor {
            Some(p) => p.forward(&out)?,
            None => out,
        };
        Ok((out, features))
    }
}
