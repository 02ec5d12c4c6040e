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
    /// The run folder of the model `index` and the curation commands use.
    pub current_model: Option<PathBuf>,
    /// The weights file the index was built with and its input side (so that `search`
    /// embeds its query with the same model).
    #[serde(default)]
    pub index_model: Option<IndexModel>,
}

/// What `index` embedded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexModel {
    /// The weights file (a run's checkpoint or an imported file).
    pub weights: PathBuf,
    /// Input side in pixels.
    pub size: u32,
    /// Whether it is a training run's checkpoint (else a plain weights file).
    pub from_run: bool,
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
            index_model: Some(IndexModel {
                weights: PathBuf::from("/w.pth"),
                size: 224,
                from_run: false,
            }),
        };
        ws.save_config(&cfg)?;
        assert_eq!(ws.config()?, cfg);
        Ok(())
    }
}
