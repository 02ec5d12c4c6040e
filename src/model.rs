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
    params: ParamStore,
}

impl DinoNet {
    /// Builds both parts under `pb` (`backbone.` and `head.` prefixes).
    pub fn new(pb: &ParamBuilder, vit: &VitConfig, head: &HeadConfig) -> Result<Self> {
        let backbone = Vit::new(&pb.push("backbone"), vit)?;
        let head = DinoHead::new(&pb.push("head"), head)?;
        Ok(Self {
            backbone,
            head,
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
    pub fn forward_views(&self, views: &[Tensor], mut rng: Option<&mut StdRng>) -> Result<Tensor> {
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
        self.head.forward(&Tensor::cat(&cls_tokens, 0)?)
    }
}
