//! Training checkpoints: one safetensors file holding student, teacher, optimizer state
//! and the loss centre, with the run's position and configuration as JSON metadata.
//! Written atomically (temporary file, fsync, rename), so a `kill -9` at any moment
//! leaves the previous checkpoint intact.
//!
//! Tensor names: `student.<official name>`, `teacher.<official name>`,
//! `optimizer.exp_avg.<name>` (SGD's momentum buffer too), `optimizer.exp_avg_sq.<name>`
//! (AdamW only), `loss.center`. The buffers (BatchNorm running statistics) are saved under
//! the same prefixes. The teacher backbone is therefore `teacher.backbone.*`, which
//! [`crate::model::weights::load_backbone`] reads directly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::optim::Moments;
use super::step::DinoState;
use crate::atomic::write_atomically;
use crate::{Error, Result};

/// Version tag of the file layout.
pub const CHECKPOINT_FORMAT: &str = "dino-curate-checkpoint/1";
const META_KEY: &str = "dino_curate";

/// Where the run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch the next step belongs to.
    pub epoch: usize,
    /// Loss of the last step.
    pub last_loss: Option<f32>,
    /// The learned-signal check's agreement before the first step ([`crate::train::signal`]).
    #[serde(default)]
    pub start_agreement: Option<f64>,
    /// The check's RankMe before the first step.
    #[serde(default)]
    pub start_rank_me: Option<f64>,
}

/// What the metadata block holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    format: String,
    progress: Progress,
    config: TrainConfig,
    /// Optimizer step count of each parameter that has state.
    optimizer_steps: HashMap<String, u64>,
}

/// A checkpoint read back from disk.
#[derive(Debug)]
pub struct Checkpoint {
    /// Position of the run.
    pub progress: Progress,
    /// Configuration of the run.
    pub config: TrainConfig,
    tensors: HashMap<String, Tensor>,
    optimizer_steps: HashMap<String, u64>,
}

fn checkpoint_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes the whole training state to `path` atomically.
pub fn save(
    path: &Path,
    state: &DinoState,
    config: &TrainConfig,
    progress: &Progress,
) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (prefix, net) in [("student", &state.student), ("teacher", &state.teacher)] {
        // Parameters and buffers (BatchNorm running statistics).
        for p in net.params().params().iter().chain(net.params().buffers()) {
            tensors.insert(format!("{prefix}.{}", p.name), p.var.as_detached_tensor());
        }
    }
    let mut optimizer_steps = HashMap::new();
    let params = state.student.params().params();
    for (p, moments) in params.iter().zip(state.optimizer.moments()) {
        if let Some(m) = moments {
            tensors.insert(format!("optimizer.exp_avg.{}", p.name), m.exp_avg.clone());
            if let Some(second) = &m.exp_avg_sq {
                tensors.insert(format!("optimizer.exp_avg_sq.{}", p.name), second.clone());
            }
            optimizer_steps.insert(p.name.clone(), m.step);
        }
    }
    tensors.insert("loss.center".into(), state.loss.center().clone());
    let meta = Meta {
        format: CHECKPOINT_FORMAT.into(),
        progress: progress.clone(),
        config: config.clone(),
        optimizer_steps,
    };
    let json = serde_json::to_string(&meta).map_err(|e| checkpoint_error(path, e.to_string()))?;
    let metadata = HashMap::from([(META_KEY.to_string(), json)]);
    write_atomically(path, |tmp| {
        safetensors::serialize_to_file(&tensors, Some(metadata), tmp)
            .map_err(|e| checkpoint_error(tmp, e.to_string()))
    })
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| checkpoint_error(path, format!("not a checkpoint: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| checkpoint_error(path, "not a dino-curate training checkpoint"))?;
    let meta: Meta =
        serde_json::from_str(json).map_err(|e| checkpoint_error(path, e.to_string()))?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(checkpoint_error(
            path,
            format!("unknown checkpoint format {}", meta.format),
        ));
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| checkpoint_error(path, e.to_string()))?;
    Ok(Checkpoint {
        progress: meta.progress,
        config: meta.config,
        tensors,
        optimizer_steps: meta.optimizer_steps,
    })
}

fn with_prefix(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
        .collect()
}

impl Checkpoint {
    /// Puts the saved networks, moments and centre into `state` (built from the same
    /// configuration).
    pub fn restore(&self, state: &mut DinoState) -> Result<()> {
        state
            .student
            .params()
            .load(&with_prefix(&self.tensors, "student."), false)?;
        state
            .teacher
            .params()
            .load(&with_prefix(&self.tensors, "teacher."), false)?;
        let first = with_prefix(&self.tensors, "optimizer.exp_avg.");
        let second = with_prefix(&self.tensors, "optimizer.exp_avg_sq.");
        let moments = state
            .student
            .params()
            .params()
            .iter()
            .map(|p| {
                let (Some(m), Some(&step)) =
                    (first.get(&p.name), self.optimizer_steps.get(&p.name))
                else {
                    return Ok(None);
                };
                let v = second.get(&p.name).map(|v| v.contiguous()?.copy());
                Ok(Some(Moments {
                    step,
                    exp_avg: m.contiguous()?.copy()?,
                    exp_avg_sq: v.transpose()?,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        state.optimizer.set_moments(moments)?;
        let center = self
            .tensors
            .get("loss.center")
            .ok_or_else(|| Error::ParamMismatch("checkpoint has no loss.center".into()))?;
        state.loss.set_center(center.copy()?)?;
        Ok(())
    }
}
