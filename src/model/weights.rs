//! Reading and writing weights with the official DINO key names.
//!
//! Accepted inputs:
//! - safetensors files (ours, or converted official ones);
//! - PyTorch `.pth` zip archives: a plain state_dict (the released backbone files such
//!   as `dino_deitsmall16_pretrain.pth`), or a full `main_dino.py` checkpoint
//!   (`{"student", "teacher", "optimizer", "epoch", "args", "dino_loss"}`), whose
//!   teacher is used. `module.` prefixes left by DistributedDataParallel are stripped.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::params::ParamBuilder;
use super::resnet::{BlockKind, ResNetConfig};
use super::vit::VitConfig;
use super::{Backbone, BackboneConfig};
use crate::atomic::write_atomically;
use crate::{Error, Result};

/// Keys of a full checkpoint under which a state_dict may sit, in order of preference.
const STATE_DICT_KEYS: [&str; 3] = ["teacher", "state_dict", "model"];

fn weights_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The container format of a weights file, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Safetensors,
    PthZip,
}

fn sniff_format(path: &Path) -> Result<Format> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 9];
    let n = file.read(&mut head).map_err(|e| Error::io(path, e))?;
    if n >= 4 && head[..4] == *b"PK\x03\x04" {
        return Ok(Format::PthZip);
    }
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    if n >= 2 && head[0] == 0x80 {
        return Err(weights_error(
            path,
            "a legacy (pre-1.6) PyTorch pickle; re-save it with torch.save in the zip format",
        ));
    }
    Err(weights_error(
        path,
        "neither a safetensors file nor a PyTorch .pth archive",
    ))
}

/// All tensors of a weights file, with the names as stored (the teacher's for a full
/// official checkpoint), on the CPU.
pub fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    let tensors = match sniff_format(path)? {
        Format::Safetensors => candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| weights_error(path, e.to_string()))?,
        Format::PthZip => read_pth(path)?,
    };
    if tensors.is_empty() {
        return Err(weights_error(path, "holds no tensors"));
    }
    Ok(tensors)
}

fn read_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    for key in STATE_DICT_KEYS {
        if let Ok(pth) = candle_core::pickle::PthTensors::new(path, Some(key)) {
            if !pth.tensor_infos().is_empty() {
                return pth_tensors(path, &pth);
            }
        }
    }
    let pth = candle_core::pickle::PthTensors::new(path, None)
        .map_err(|e| weights_error(path, e.to_string()))?;
    pth_tensors(path, &pth)
}

fn pth_tensors(
    path: &Path,
    pth: &candle_core::pickle::PthTensors,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for name in pth.tensor_infos().keys() {
        let tensor = pth
            .get(name)
            .map_err(|e| weights_error(path, format!("{name}: {e}")))?
            .ok_or_else(|| weights_error(path, format!("{name} listed but not stored")))?;
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

/// The backbone's tensors under their plain official names (`cls_token`, `blocks.0.…`).
///
/// Looks, in order, for `teacher.backbone.*` (our checkpoints), `backbone.*` (a
/// `MultiCropWrapper` state_dict) and plain names; `module.` prefixes are dropped first
/// and projection-head tensors are left out.
pub fn backbone_tensors(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let unwrapped: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), v))
        .collect();
    for prefix in ["teacher.backbone.", "backbone."] {
        if unwrapped.keys().any(|k| k.starts_with(prefix)) {
            return unwrapped
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_owned(), v)))
                .collect();
        }
    }
    unwrapped
        .into_iter()
        .filter(|(k, _)| !k.starts_with("head.") && !k.starts_with("student."))
        .collect()
}

fn dims_of<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a [usize]> {
    tensors
        .get(name)
        .map(|t| t.dims())
        .ok_or_else(|| Error::ParamMismatch(format!("no {name} among the backbone tensors")))
}

/// The ViT shape that backbone tensors describe. Heads are 64-d as in every official
/// model; the positional grid gives the native image size.
pub fn vit_config_from_tensors(tensors: &HashMap<String, Tensor>) -> Result<VitConfig> {
    let patch = dims_of(tensors, "patch_embed.proj.weight")?;
    let (embed_dim, patch_size) = match patch {
        [d, 3, p, q] if p == q => (*d, *p),
        other => {
            return Err(Error::ParamMismatch(format!(
                "patch_embed.proj.weight {other:?}"
            )))
        }
    };
    let depth = (0..)
        .take_while(|i| tensors.contains_key(&format!("blocks.{i}.norm1.weight")))
        .count();
    let hidden = dims_of(tensors, "blocks.0.mlp.fc1.weight")?[0];
    let positions = dims_of(tensors, "pos_embed")?[1].saturating_sub(1);
    let side = (positions as f64).sqrt().round() as usize;
    if side * side != positions || positions == 0 {
        return Err(Error::ParamMismatch(format!(
            "pos_embed has {positions} patch positions, not a square grid"
        )));
    }
    Ok(VitConfig {
        embed_dim,
        depth,
        num_heads: (embed_dim / 64).max(1),
        mlp_ratio: hidden / embed_dim.max(1),
        patch_size,
        img_size: side * patch_size,
        drop_path_rate: 0.0,
    })
}

/// Loads a backbone for inference from any accepted weights file.
pub fn load_backbone(path: &Path, device: &Device) -> Result<Backbone> {
    let mut tensors = backbone_tensors(read_weights(path)?);
    let cfg =
        backbone_config_from_tensors(&tensors).map_err(|e| weights_error(path, e.to_string()))?;
    if matches!(cfg, BackboneConfig::ResNet(_)) {
        // DINO replaces torchvision's classifier by an identity; a classifier's fc is unused.
        tensors.retain(|k, _| !k.starts_with("fc."));
    }
    let pb = ParamBuilder::frozen(device, 0);
    let backbone = Backbone::new(&pb, &cfg)?;
    pb.store()
        .load(&tensors, false)
        .map_err(|e| weights_error(path, e.to_string()))?;
    Ok(backbone)
}

/// A ViT when the tensors hold `patch_embed.proj.weight`, a ResNet when they hold
/// torchvision's `conv1.weight` and `layer1.0.conv1.weight`.
pub fn backbone_config_from_tensors(tensors: &HashMap<String, Tensor>) -> Result<BackboneConfig> {
    if tensors.contains_key("conv1.weight") && tensors.contains_key("layer1.0.conv1.weight") {
        return Ok(BackboneConfig::ResNet(resnet_config_from_tensors(tensors)?));
    }
    Ok(BackboneConfig::Vit(vit_config_from_tensors(tensors)?))
}

/// The ResNet shape of a torchvision state dict: width from `conv1`, the block type from
/// the presence of `conv3`, the blocks per stage by counting.
pub fn resnet_config_from_tensors(tensors: &HashMap<String, Tensor>) -> Result<ResNetConfig> {
    let width = match dims_of(tensors, "conv1.weight")? {
        [w, 3, 7, 7] => *w,
        other => return Err(Error::ParamMismatch(format!("conv1.weight {other:?}"))),
    };
    let block = if tensors.contains_key("layer1.0.conv3.weight") {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    let mut layers = [0; 4];
    for (i, n) in layers.iter_mut().enumerate() {
        *n = (0..)
            .take_while(|b| tensors.contains_key(&format!("layer{}.{b}.conv1.weight", i + 1)))
            .count();
    }
    Ok(ResNetConfig {
        block,
        layers,
        width,
    })
}

/// Writes tensors to a safetensors file atomically (temporary file + rename).
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    write_atomically(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| weights_error(tmp, e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Vit, VitArch};

    #[test]
    fn saved_weights_load_back_as_the_same_backbone() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let cfg = VitConfig {
            depth: 1,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let pb = ParamBuilder::frozen(&Device::Cpu, 7);
        let vit = Vit::new(&pb, &cfg)?;
        let path = dir.path().join("backbone.safetensors");
        save_safetensors(&pb.store().tensors()?, &path)?;

        let loaded = load_backbone(&path, &Device::Cpu)?;
        let loaded = loaded.vit("this test")?;
        assert_eq!(loaded.config(), &cfg);
        let x = Tensor::randn(0f32, 1., (1, 3, 48, 64), &Device::Cpu)?;
        let diff = (vit.forward(&x, None)? - loaded.forward(&x, None)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn files_that_are_not_weights_get_a_clear_error() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("photo.jpg");
        std::fs::write(&path, b"\xFF\xD8\xFF\xE0 not weights").map_err(|e| Error::io(&path, e))?;
        let err = read_weights(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("photo.jpg") && err.contains("neither"),
            "{err}"
        );
        let missing = dir.path().join("missing.pth");
        assert!(matches!(read_weights(&missing), Err(Error::Io { .. })));
        Ok(())
    }
}
