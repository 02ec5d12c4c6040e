//! Where a user's state lives: `$DINO_CURATE_HOME`, else `$XDG_DATA_HOME/dino-curate`,
//! else `~/.local/share/dino-curate` (or `--workspace DIR`). It holds `config.toml`
//! (collection roots, current model) and `models/<run>/` (checkpoint, metrics).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomically;
use crate::{Error, Result};

const CONFIG_FILE: &str = "config.toml";
const MODELS_DIR: &str = "models";

/// The workspace's `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceConfig {
    /// Photo folders of the collection, as given to `train` (absolute).
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// The run folder of the last model `train` made.
    pub current_model: Option<PathBuf>,
    /// The model `index` embeds with when none is named (default: the released default).
    #[serde(default)]
    pub model: Option<ModelChoice>,
    /// What the index was built with (so that `search` embeds its query with the same
    /// model).
    #[serde(default, deserialize_with = "index_model_or_legacy")]
    pub index_model: Option<IndexModel>,
}

/// A model the user asked `index` to embed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelChoice {
    /// A released DINO backbone, by name (`dino-vits16`).
    Released {
        /// Its name.
        name: String,
    },
    /// The workspace's last trained model.
    Trained,
    /// A weights file.
    File {
        /// The file.
        weights: PathBuf,
        /// Input side in pixels.
        size: u32,
    },
}

/// What `index` embedded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum IndexModel {
    /// A released backbone from the model cache.
    Released {
        /// Its name.
        name: String,
        /// The cached file.
        weights: PathBuf,
        /// Input side in pixels.
        size: u32,
    },
    /// A training run's checkpoint.
    Run {
        /// The checkpoint.
        weights: PathBuf,
        /// Input side in pixels.
        size: u32,
    },
    /// A weights file.
    File {
        /// The file.
        weights: PathBuf,
        /// Input side in pixels.
        size: u32,
    },
    /// No model could be had (no network): an untrained network that needs no file,
    /// good for copies and nothing semantic.
    Untrained {
        /// The released model that was wanted.
        wanted: String,
        /// Input side in pixels.
        size: u32,
    },
}

/// How `index_model` was written before models had kinds.
#[derive(Debug, Deserialize)]
struct LegacyIndexModel {
    weights: PathBuf,
    size: u32,
    from_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AnyIndexModel {
    Current(IndexModel),
    Legacy(LegacyIndexModel),
}

fn index_model_or_legacy<'de, D>(
    deserializer: D,
) -> std::result::Result<Option<IndexModel>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let any: Option<AnyIndexModel> = Option::deserialize(deserializer)?;
    Ok(any.map(|m| match m {
        AnyIndexModel::Current(m) => m,
        AnyIndexModel::Legacy(LegacyIndexModel {
            weights,
            size,
            from_run: true,
        }) => IndexModel::Run { weights, size },
        AnyIndexModel::Legacy(LegacyIndexModel { weights, size, .. }) => {
            IndexModel::File { weights, size }
        }
    }))
}

/// A workspace folder.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

fn default_root() -> Option<PathBuf> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("DINO_CURATE_HOME")
        .or_else(|| from_env("XDG_DATA_HOME").map(|d| d.join("dino-curate")))
        .or_else(|| from_env("HOME").map(|h| h.join(".local/share/dino-curate")))
}

impl Workspace {
    /// The workspace at `explicit`, or the default one; created if missing.
    pub fn open(explicit: Option<&Path>) -> Result<Self> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => default_root().ok_or_else(|| {
                Error::Config("no workspace: set --workspace, DINO_CURATE_HOME or HOME".into())
            })?,
        };
        std::fs::create_dir_all(root.join(MODELS_DIR)).map_err(|e| Error::io(&root, e))?;
        Ok(Self { root })
    }

    /// The workspace folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads `config.toml` (defaults when it does not exist yet).
    pub fn config(&self) -> Result<WorkspaceConfig> {
        let path = self.root.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WorkspaceConfig::default()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes `config.toml` atomically.
    pub fn save_config(&self, config: &WorkspaceConfig) -> Result<()> {
        let path = self.root.join(CONFIG_FILE);
        let text = toml::to_string_pretty(config).map_err(|e| {
            Error::Config(format!(
                "cannot record the collection in {}: {e}",
                path.display()
            ))
        })?;
        write_atomically(&path, |tmp| {
            std::fs::write(tmp, &text).map_err(|e| Error::io(tmp, e))
        })
    }

    /// A new, empty run folder `models/run-YYYYMMDD-HHMMSS` (suffixed if taken).
    pub fn new_run_dir(&self) -> Result<PathBuf> {
        let stamp = chrono::Local::now().format("run-%Y%m%d-%H%M%S").to_string();
        let models = self.root.join(MODELS_DIR);
        for n in 0..1000 {
            let name = if n == 0 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            };
            let dir = models.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        Err(Error::Config(format!(
            "no free run name under {}",
            models.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_runs_get_distinct_folders() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let ws = Workspace::open(Some(dir.path()))?;
        assert_eq!(ws.config()?, WorkspaceConfig::default());
        let a = ws.new_run_dir()?;
        let b = ws.new_run_dir()?;
        assert_ne!(a, b);
        let cfg = WorkspaceConfig {
            roots: vec![PathBuf::from("/photos")],
            current_model: Some(a),
            model: Some(ModelChoice::Trained),
            index_model: Some(IndexModel::Released {
                name: "dino-vits16".into(),
                weights: PathBuf::from("/w.pth"),
                size: 224,
            }),
        };
        ws.save_config(&cfg)?;
        assert_eq!(ws.config()?, cfg);
        Ok(())
    }

    #[test]
    fn a_config_from_before_model_kinds_still_reads() -> Result<()> {
        let text = "roots = []\n\n[index_model]\nweights = \"/run/checkpoint.safetensors\"\nsize = 96\nfrom_run = true\n";
        let cfg: WorkspaceConfig =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        assert_eq!(
            cfg.index_model,
            Some(IndexModel::Run {
                weights: PathBuf::from("/run/checkpoint.safetensors"),
                size: 96
            })
        );
        Ok(())
    }
}
