//! ResNet as torchvision builds it (v1.5: the stride on the 3×3 convolution), without
//! `fc`: the backbone returns the globally average-pooled features, as DINO's
//! `model.fc = nn.Identity()`. Parameter and buffer names are torchvision's
//! (`conv1.weight`, `bn1.running_mean`, `layer1.0.downsample.1.weight`, ...), so the
//! official `dino_resnet50_pretrain.pth` loads as it is.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::layers::BatchNorm;
use super::ops;
use super::params::{Init, ParamBuilder};
use crate::{Error, Result};

/// The residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1×1, 3×3, 1×1 convolutions (ResNet-50/101/152), expansion 4.
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Shape of a ResNet. torchvision's are `width` 64; narrower ones keep the layout (the
/// parity fixtures use width 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Block type.
    pub block: BlockKind,
    /// Blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Channels of the stem and of the first stage's blocks (`planes`), 64 in torchvision.
    pub width: usize,
}

impl ResNetConfig {
    /// torchvision's `resnet18`.
    pub fn resnet18() -> Self {
        Self {
            block: BlockKind::Basic,
            layers: [2, 2, 2, 2],
            width: 64,
        }
    }

    /// torchvision's `resnet50`.
    pub fn resnet50() -> Self {
        Self {
            block: BlockKind::Bottleneck,
            layers: [3, 4, 6, 3],
            width: 64,
        }
    }

    /// Width of the pooled output (512 for ResNet-18, 2048 for ResNet-50).
    pub fn out_dim(&self) -> usize {
        self.width * 8 * self.block.expansion()
    }

    /// `resnet18`, `resnet50`, or a description of another shape.
    pub fn name(&self) -> String {
        if *self == Self::resnet18() {
            "resnet18".into()
        } else if *self == Self::resnet50() {
            "resnet50".into()
        } else {
            format!(
                "resnet ({:?} {:?}, width {})",
                self.block, self.layers, self.width
            )
        }
    }
}

/// A bias-free convolution with torchvision's init (`kaiming_normal_`, fan-out, ReLU gain).
#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    stride: usize,
    pad: usize,
}

impl Conv {
    fn new(pb: &ParamBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Self> {
        let std = (2.0 / (cout * k * k) as f64).sqrt();
        Ok(Self {
            weight: pb.param("weight", (cout, cin, k, k), Init::Normal(std))?,
            stride,
            pad: k / 2,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.stride, self.pad)
    }
}

/// Convolution then BatchNorm (then ReLU): every convolution of a ResNet is followed by one.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv,
    bn: BatchNorm,
}

impl ConvBn {
    fn forward(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x)?, train, relu)
    }
}

#[derive(Debug, Clone)]
struct Block {
    /// conv1/bn1, conv2/bn2 (and conv3/bn3 for a bottleneck).
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(
        pb: &ParamBuilder,
        kind: BlockKind,
        cin: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Self> {
        let out = planes * kind.expansion();
        // (input, output, kernel, stride) of each convolution.
        let shapes = match kind {
            BlockKind::Basic => vec![(cin, planes, 3, stride), (planes, planes, 3, 1)],
            BlockKind::Bottleneck => vec![
                (cin, planes, 1, 1),
                (planes, planes, 3, stride),
                (planes, out, 1, 1),
            ],
        };
        let mut convs = Vec::with_capacity(shapes.len());
        for (i, (a, b, k, s)) in shapes.into_iter().enumerate() {
            let conv = Conv::new(&pb.push(format!("conv{}", i + 1)), a, b, k, s)?;
            let bn = BatchNorm::new(&pb.push(format!("bn{}", i + 1)), b)?;
            convs.push(ConvBn { conv, bn });
        }
        let downsample = if stride != 1 || cin != out {
            let ds = pb.push("downsample");
            Some(ConvBn {
                conv: Conv::new(&ds.push(0), cin, out, 1, stride)?,
                bn: BatchNorm::new(&ds.push(1), out)?,
            })
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.convs.len().saturating_sub(1);
        for (i, cb) in self.convs.iter().enumerate() {
            h = cb.forward(&h, train, i < last)?;
        }
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x, train, false)?,
            None => x.clone(),
        };
        Ok((h + identity)?.relu()?)
    }
}

/// The ResNet trunk: stem (7×7 stride-2 convolution, BN, ReLU, 3×3 stride-2 max pool),
/// four stages, global average pool.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    cfg: ResNetConfig,
}

impl ResNet {
    /// Creates the parameters (and BatchNorm buffers) under `pb` in torchvision's order.
    pub fn new(pb: &ParamBuilder, cfg: &ResNetConfig) -> Result<Self> {
        if cfg.width == 0 || cfg.layers.contains(&0) {
            return Err(Error::Config(format!(
                "a ResNet needs blocks and width: {cfg:?}"
            )));
        }
        let stem = ConvBn {
            conv: Conv::new(&pb.push("conv1"), 3, cfg.width, 7, 2)?,
            bn: BatchNorm::new(&pb.push("bn1"), cfg.width)?,
        };
        let mut cin = cfg.width;
        let mut stages = Vec::with_capacity(4);
        for (i, &blocks) in cfg.layers.iter().enumerate() {
            let planes = cfg.width << i;
            let stride = if i == 0 { 1 } else { 2 };
            let layer = pb.push(format!("layer{}", i + 1));
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let s = if b == 0 { stride } else { 1 };
                stage.push(Block::new(&layer.push(b), cfg.block, cin, planes, s)?);
                cin = planes * cfg.block.expansion();
            }
            stages.push(stage);
        }
        Ok(Self {
            stem,
            stages,
            cfg: cfg.clone(),
        })
    }

    /// The shape it was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// The last stage's feature map `[B, out_dim, h, w]` of images `[B, 3, H, W]`.
    /// `train`: BatchNorm with batch statistics (updating the running averages).
    pub fn feature_map(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.rank() != 4 || x.dim(1)? != 3 {
            return Err(Error::Config(format!(
                "a ResNet reads [B, 3, H, W], got {:?}",
                x.dims()
            )));
        }
        let mut h = self.stem.forward(x, train, true)?;
        h = ops::max_pool2d(&h, 3, 2, 1)?;
        for block in self.stages.iter().flatten() {
            h = block.forward(&h, train)?;
        }
        Ok(h)
    }

    /// The globally average-pooled features `[B, out_dim]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self
            .feature_map(x, train)?
            .flatten_from(2)?
            .mean(D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn torchvision_names_and_sizes() -> Result<()> {
        let pb = ParamBuilder::frozen(&Device::Cpu, 0);
        ResNet::new(&pb, &ResNetConfig::resnet18())?;
        let store = pb.store();
        // torchvision resnet18 without fc: 11,176,512 parameters, 20 BatchNorms.
        assert_eq!(store.num_values(), 11_176_512);
        assert_eq!(store.buffers().len(), 3 * 20);
        let names: Vec<&str> = store.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[..3], ["conv1.weight", "bn1.weight", "bn1.bias"]);
        assert!(store.get("layer2.0.downsample.0.weight").is_some());
        assert!(store.get("layer2.0.downsample.1.bias").is_some());
        assert!(store.get("layer1.0.downsample.0.weight").is_none());
        Ok(())
    }

    #[test]
    fn resnet50_has_the_torchvision_parameter_count() -> Result<()> {
        let pb = ParamBuilder::frozen(&Device::Cpu, 0);
        let net = ResNet::new(&pb, &ResNetConfig::resnet50())?;
        // torchvision resnet50 (25,557,032) minus fc (2048·1000 + 1000).
        assert_eq!(pb.store().num_values(), 23_508_032);
        assert_eq!(net.config().out_dim(), 2048);
        assert!(pb.store().get("layer1.0.downsample.0.weight").is_some());
        Ok(())
    }

    #[test]
    fn any_input_size_pools_to_the_output_width() -> Result<()> {
        let cfg = ResNetConfig {
            width: 4,
            ..ResNetConfig::resnet18()
        };
        let pb = ParamBuilder::frozen(&Device::Cpu, 0);
        let net = ResNet::new(&pb, &cfg)?;
        for side in [32, 48, 57] {
            let x = Tensor::randn(0f32, 1., (2, 3, side, side), &Device::Cpu)?;
            assert_eq!(net.forward(&x, true)?.dims(), [2, 32]);
            assert_eq!(net.forward(&x, false)?.dims(), [2, 32]);
        }
        let tracked = pb.store().tensors()?["bn1.num_batches_tracked"].to_scalar::<f32>()?;
        assert_eq!(tracked, 3.0);
        Ok(())
    }
}
