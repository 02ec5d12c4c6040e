//! The DINO authors' released backbones (Apache-2.0), by name, downloaded once into a
//! cache and checked before every use.
//!
//! - Names: [`RELEASED`]; the file is the official backbone-only `<official>.pth` (the
//!   teacher's weights) at `<base>/<official>/<official>.pth`, the base being
//!   `https://dl.fbaipublicfiles.com/dino/` or `$DINO_CURATE_DOWNLOAD_BASE`.
//! - Cache: `$DINO_CURATE_MODELS`, else `$XDG_CACHE_HOME/dino-curate/models`, else
//!   `~/.cache/dino-curate/models`. A download goes to `<file>.part` (kept when
//!   interrupted, for the resume), is verified (every key and shape of the architecture,
//!   finite values), renamed into place, and then its size and SHA-256 are recorded in
//!   `<file>.json`, which every later load checks. Meta publishes no checksum, so the
//!   first verified download is the reference.
//! - Once the file is there, nothing touches the network.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::write_atomically;
use crate::download::{download, DownloadError};
use crate::model::params::ParamBuilder;
use crate::model::resnet::ResNetConfig;
use crate::model::vit::{VitArch, VitConfig};
use crate::model::weights::{backbone_tensors, read_weights};
use crate::model::{Backbone, BackboneConfig};

/// Where the official files are, unless `$DINO_CURATE_DOWNLOAD_BASE` says otherwise.
pub const OFFICIAL_BASE: &str = "https://dl.fbaipublicfiles.com/dino/";

/// The model `index` and `train` start from when none is named.
pub const DEFAULT_MODEL: &str = "dino-vits16";

/// Input side of the released models (they were trained and evaluated at 224).
pub const RELEASED_SIZE: u32 = 224;

/// One released backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReleasedModel {
    /// Our name (`--model`).
    pub name: &'static str,
    /// The official file stem (`dino_deitsmall16_pretrain`).
    pub official: &'static str,
    /// The architecture, for people.
    pub arch: &'static str,
    /// ImageNet k-NN and linear top-1 reported in the paper (Table 2), in %.
    pub imagenet_knn_linear: (f32, f32),
    /// About how many bytes the file has (mirrors of the same tensors; no official figure).
    pub approx_bytes: u64,
    /// The network the file fits.
    pub shape: ReleasedShape,
}

/// The architecture of a released file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleasedShape {
    /// A ViT of this size and patch side.
    Vit(VitArch, usize),
    /// torchvision's ResNet-50.
    ResNet50,
}

/// Every released backbone that our code runs (the XCiT ones need a model we lack).
pub const RELEASED: [ReleasedModel; 5] = [
    ReleasedModel {
        name: "dino-vits16",
        official: "dino_deitsmall16_pretrain",
        arch: "ViT-S/16",
        imagenet_knn_linear: (74.5, 77.0),
        approx_bytes: 86_700_000,
        shape: ReleasedShape::Vit(VitArch::VitSmall, 16),
    },
    ReleasedModel {
        name: "dino-vits8",
        official: "dino_deitsmall8_pretrain",
        arch: "ViT-S/8",
        imagenet_knn_linear: (78.3, 79.7),
        approx_bytes: 86_700_000,
        shape: ReleasedShape::Vit(VitArch::VitSmall, 8),
    },
    ReleasedModel {
        name: "dino-vitb16",
        official: "dino_vitbase16_pretrain",
        arch: "ViT-B/16",
        imagenet_knn_linear: (76.1, 78.2),
        approx_bytes: 343_000_000,
        shape: ReleasedShape::Vit(VitArch::VitBase, 16),
    },
    ReleasedModel {
        name: "dino-vitb8",
        official: "dino_vitbase8_pretrain",
        arch: "ViT-B/8",
        imagenet_knn_linear: (77.4, 80.1),
        approx_bytes: 343_000_000,
        shape: ReleasedShape::Vit(VitArch::VitBase, 8),
    },
    ReleasedModel {
        name: "dino-resnet50",
        official: "dino_resnet50_pretrain",
        arch: "ResNet-50",
        imagenet_knn_linear: (67.5, 75.3),
        approx_bytes: 94_000_000,
        shape: ReleasedShape::ResNet50,
    },
];

/// The released model called `name`.
pub fn find(name: &str) -> Option<&'static ReleasedModel> {
    RELEASED.iter().find(|m| m.name == name)
}

/// The names, for messages.
pub fn names() -> String {
    RELEASED.map(|m| m.name).join(", ")
}

impl ReleasedModel {
    /// The architecture the file must fit.
    pub fn backbone_config(&self) -> BackboneConfig {
        match self.shape {
            ReleasedShape::Vit(arch, patch) => BackboneConfig::Vit(VitConfig {
                img_size: RELEASED_SIZE as usize,
                ..VitConfig::preset(arch, patch)
            }),
            ReleasedShape::ResNet50 => BackboneConfig::ResNet(ResNetConfig::resnet50()),
        }
    }

    /// The file's name in the cache (the official one).
    pub fn file_name(&self) -> String {
        format!("{}.pth", self.official)
    }

    /// Its address under `base` (which ends in `/` or gets one).
    pub fn url(&self, base: &str) -> String {
        let sep = if base.ends_with('/') { "" } else { "/" };
        format!("{base}{sep}{}/{}.pth", self.official, self.official)
    }
}

/// What is recorded beside a verified file, and checked at each load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// Where it came from (a URL, or "placed by hand").
    pub source: String,
}

/// Why a released model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No connection could be made and the file is not in the cache.
    #[error("{}", offline_message(model, url, path))]
    Offline {
        /// The model's name.
        model: &'static str,
        /// Where it would come from.
        url: String,
        /// Where it would go.
        path: PathBuf,
    },
    /// The download failed in a way the user should look at.
    #[error("{}", failed_message(model, source, path))]
    Download {
        /// The model's name.
        model: &'static str,
        /// What went wrong.
        source: DownloadError,
        /// Where the file would go.
        path: PathBuf,
    },
    /// The file is not the architecture's released backbone (nothing is kept).
    #[error("{model}: {} is not a usable {arch} backbone ({reason}); it was not kept. Download {url} again, or put a good copy at {} (or pass --weights FILE)", path.display(), path.display())]
    Invalid {
        /// The model's name.
        model: &'static str,
        /// Its architecture.
        arch: &'static str,
        /// Where it would come from.
        url: String,
        /// The file that failed.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The cached file no longer matches what was recorded when it was verified.
    #[error("{}: changed since it was verified ({reason}); delete it (and {}.json) to download it again", path.display(), path.display())]
    Changed {
        /// The cached file.
        path: PathBuf,
        /// Size or hash.
        reason: String,
    },
    /// The cache could not be read or written.
    #[error(transparent)]
    Io(#[from] crate::Error),
}

fn offline_message(model: &str, url: &str, path: &Path) -> String {
    format!(
        "no network: cannot download {model} from {url}, and it is not at {} (a copy put \
         there by hand will do, as will --weights FILE)",
        path.display()
    )
}

fn failed_message(model: &str, source: &DownloadError, path: &Path) -> String {
    let keep = match source {
        DownloadError::Interrupted { .. } => {
            "; what arrived is kept and the next try resumes from there"
        }
        _ => "",
    };
    format!(
        "cannot download {model}: {source}{keep}. Try again later, set \
         DINO_CURATE_DOWNLOAD_BASE to a mirror, download the file by hand and put it at {}, \
         or pass --weights FILE",
        path.display()
    )
}

/// Where released models are kept, and where they come from.
#[derive(Debug, Clone)]
pub struct ModelCache {
    dir: PathBuf,
    base: String,
}

/// State of one model in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheState {
    /// Not there.
    Missing,
    /// An interrupted download of this many bytes.
    Partial(u64),
    /// The file is there; its record when it has been verified.
    Present(Option<FileRecord>),
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl ModelCache {
    /// The cache and base URL the environment names (see the module documentation).
    pub fn from_env() -> crate::Result<Self> {
        let dir = env_path("DINO_CURATE_MODELS")
            .or_else(|| env_path("XDG_CACHE_HOME").map(|d| d.join("dino-curate/models")))
            .or_else(|| env_path("HOME").map(|h| h.join(".cache/dino-curate/models")))
            .ok_or_else(|| {
                crate::Error::Config("no model cache: set DINO_CURATE_MODELS or HOME".into())
            })?;
        let base = std::env::var("DINO_CURATE_DOWNLOAD_BASE")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| OFFICIAL_BASE.to_owned());
        Ok(Self { dir, base })
    }

    /// A cache in `dir`, downloading from `base`.
    pub fn new(dir: PathBuf, base: String) -> Self {
        Self { dir, base }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `model` is (or would be) cached.
    pub fn path(&self, model: &ReleasedModel) -> PathBuf {
        self.dir.join(model.file_name())
    }

    /// Where `model` is downloaded from.
    pub fn url(&self, model: &ReleasedModel) -> String {
        model.url(&self.base)
    }

    fn part_path(&self, model: &ReleasedModel) -> PathBuf {
        self.dir.join(format!("{}.part", model.file_name()))
    }

    fn record_path(&self, model: &ReleasedModel) -> PathBuf {
        self.dir.join(format!("{}.json", model.file_name()))
    }

    /// What the cache holds for `model` (no checks, no network).
    pub fn state(&self, model: &ReleasedModel) -> CacheState {
        if self.path(model).is_file() {
            return CacheState::Present(self.record(model).ok().flatten());
        }
        match std::fs::metadata(self.part_path(model)) {
            Ok(m) => CacheState::Partial(m.len()),
            Err(_) => CacheState::Missing,
        }
    }

    fn record(&self, model: &ReleasedModel) -> crate::Result<Option<FileRecord>> {
        let path = self.record_path(model);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| crate::Error::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::Error::io(path, e)),
        }
    }

    /// The cached file of `model`, checked against its record; a file without a record
    /// (placed by hand, or a run killed before recording) is verified and recorded first.
    /// `None` when it is not cached.
    pub fn cached(&self, model: &'static ReleasedModel) -> Result<Option<PathBuf>, ModelError> {
        let path = self.path(model);
        if !path.is_file() {
            return Ok(None);
        }
        match self.record(model)? {
            Some(record) => check_record(&path, &record)?,
            None => {
                verify_backbone(&path, model).map_err(|reason| self.invalid(model, reason))?;
                self.write_record(model, "placed by hand")?;
            }
        }
        Ok(Some(path))
    }

    /// The file of `model`: from the cache, else downloaded (see the module documentation).
    /// `progress(done, total)` follows the download.
    pub fn ensure(
        &self,
        model: &'static ReleasedModel,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<PathBuf, ModelError> {
        if let Some(path) = self.cached(model)? {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| crate::Error::io(&self.dir, e))?;
        let part = self.part_path(model);
        let url = self.url(model);
        let path = self.path(model);
        match download(&url, &part, progress) {
            Ok(_) => {}
            Err(DownloadError::Unreachable { .. }) => {
                return Err(ModelError::Offline {
                    model: model.name,
                    url,
                    path,
                })
            }
            Err(source) => {
                return Err(ModelError::Download {
                    model: model.name,
                    source,
                    path,
                })
            }
        }
        if let Err(reason) = verify_backbone(&part, model) {
            let _ = std::fs::remove_file(&part);
            return Err(self.invalid(model, reason));
        }
        std::fs::rename(&part, &path).map_err(|e| crate::Error::io(&path, e))?;
        self.write_record(model, &url)?;
        Ok(path)
    }

    fn invalid(&self, model: &'static ReleasedModel, reason: String) -> ModelError {
        ModelError::Invalid {
            model: model.name,
            arch: model.arch,
            url: self.url(model),
            path: self.path(model),
            reason,
        }
    }

    fn write_record(&self, model: &ReleasedModel, source: &str) -> crate::Result<()> {
        let path = self.path(model);
        let record = FileRecord {
            size: std::fs::metadata(&path)
                .map_err(|e| crate::Error::io(&path, e))?
                .len(),
            sha256: sha256_hex(&path)?,
            source: source.to_owned(),
        };
        let text = serde_json::to_string_pretty(&record)
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        write_atomically(&self.record_path(model), |tmp| {
            std::fs::write(tmp, &text).map_err(|e| crate::Error::io(tmp, e))
        })
    }
}

fn check_record(path: &Path, record: &FileRecord) -> Result<(), ModelError> {
    let size = std::fs::metadata(path)
        .map_err(|e| crate::Error::io(path, e))?
        .len();
    let changed = |reason: String| ModelError::Changed {
        path: path.to_path_buf(),
        reason,
    };
    if size != record.size {
        return Err(changed(format!("{size} bytes, {} recorded", record.size)));
    }
    let sha = sha256_hex(path)?;
    if sha != record.sha256 {
        return Err(changed(format!(
            "SHA-256 {sha}, {} recorded",
            record.sha256
        )));
    }
    Ok(())
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_hex(path: &Path) -> crate::Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| crate::Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks that `path` holds every tensor of `model`'s architecture with its shape, and
/// only finite values; the reason when it does not.
pub fn verify_backbone(path: &Path, model: &ReleasedModel) -> Result<(), String> {
    let tensors = backbone_tensors(read_weights(path).map_err(|e| e.to_string())?);
    let pb = ParamBuilder::frozen(&Device::Cpu, 0);
    Backbone::new(&pb, &model.backbone_config()).map_err(|e| e.to_string())?;
    let store = pb.store();
    store.load(&tensors, true).map_err(|e| e.to_string())?;
    for param in store.params().iter().chain(store.buffers()) {
        let values = param
            .var
            .as_tensor()
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(format!("{} holds NaN or infinite values", param.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_addresses_and_names() {
        let m = find(DEFAULT_MODEL).expect("the default is released");
        assert_eq!(
            m.url(OFFICIAL_BASE),
            "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
        );
        assert_eq!(
            m.url("http://mirror:8000/dino"),
            "http://mirror:8000/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
        );
        assert!(find("dino-vitb8").is_some());
        assert!(find("vit-small").is_none());
    }

    #[test]
    fn architectures_fit_the_official_shapes() {
        let BackboneConfig::Vit(v) = find("dino-vitb8").expect("known").backbone_config() else {
            panic!("ViT-B/8 is a ViT");
        };
        assert_eq!((v.embed_dim, v.patch_size, v.img_size), (768, 8, 224));
        assert!(matches!(
            find("dino-resnet50").expect("known").backbone_config(),
            BackboneConfig::ResNet(_)
        ));
    }

    #[test]
    fn a_file_of_the_wrong_architecture_fails_verification() -> crate::Result<()> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::io("tempdir", e))?;
        let path = dir.path().join("tiny.safetensors");
        let tiny = VitConfig {
            depth: 1,
            ..VitConfig::preset(VitArch::VitTiny, 16)
        };
        let pb = ParamBuilder::frozen(&Device::Cpu, 0);
        Backbone::new(&pb, &BackboneConfig::Vit(tiny))?;
        crate::model::weights::save_safetensors(&pb.store().tensors()?, &path)?;
        let err = verify_backbone(&path, find(DEFAULT_MODEL).expect("known"))
            .expect_err("a ViT-Tiny is not a ViT-S/16");
        assert!(err.contains("shape") || err.contains("missing"), "{err}");
        Ok(())
    }
}
