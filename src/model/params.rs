//! Named parameters of a network, in creation order, with the official key names.
//!
//! A [`ParamStore`] owns one [`Var`] per parameter. Networks are built through a
//! [`ParamBuilder`], which creates each parameter with its initialiser and hands the
//! network a tensor that shares the variable's storage, so that an optimizer or an EMA
//! writing into the variable is seen by the network without rebuilding it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Shape, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Uniform};

use crate::{Error, Result};

/// How a parameter is initialised, as the official DINO code does it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Normal with this standard deviation, truncated to [-2, 2] (`trunc_normal_`).
    TruncNormal(f64),
    /// Uniform in [-bound, bound] (PyTorch's default `kaiming_uniform_(a=√5)` and bias init).
    Uniform(f64),
    /// Normal with this standard deviation, untruncated (`kaiming_normal_`).
    Normal(f64),
}

/// One named parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Official key name, e.g. `blocks.0.attn.qkv.weight`.
    pub name: String,
    /// The storage that optimizers and EMA update in place.
    pub var: Var,
    /// Whether the optimizer updates it (false for a fixed weight-norm `g`).
    pub trainable: bool,
}

/// The parameters of one network, in creation order, and its buffers (BatchNorm running
/// statistics: saved, loaded and copied with the parameters, but never trained nor EMA'd).
#[derive(Debug, Clone)]
pub struct ParamStore {
    params: Vec<Param>,
    index: HashMap<String, usize>,
    buffers: Vec<Param>,
    device: Device,
}

impl ParamStore {
    fn new(device: &Device) -> Self {
        Self {
            params: Vec::new(),
            index: HashMap::new(),
            buffers: Vec::new(),
            device: device.clone(),
        }
    }

    /// The parameters in creation order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The buffers (`trainable` is false), in creation order.
    pub fn buffers(&self) -> &[Param] {
        &self.buffers
    }

    /// Parameters then buffers: everything a state dict holds.
    fn entries(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().chain(&self.buffers)
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.buffers.iter().any(|b| b.name == name)
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.index.get(name).map(|&i| &self.params[i])
    }

    /// Number of scalar values over all parameters.
    pub fn num_values(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// A snapshot of the current values (parameters and buffers), keyed by name:
    /// independent copies that later updates of the parameters do not change.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.entries()
            .map(|p| Ok((p.name.clone(), p.var.as_detached_tensor().copy()?)))
            .collect()
    }

    /// Overwrites every parameter and buffer with the tensor of the same name.
    ///
    /// Every parameter must be present with the right shape; extra tensors are an error
    /// unless `allow_extra` is set. Values are converted to f32 on this store's device.
    pub fn load(&self, tensors: &HashMap<String, Tensor>, allow_extra: bool) -> Result<()> {
        let missing: Vec<&str> = self
            .entries()
            .filter(|p| !tensors.contains_key(&p.name))
            .map(|p| p.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::ParamMismatch(format!(
                "missing {}",
                missing.join(", ")
            )));
        }
        if !allow_extra {
            let mut extra: Vec<&str> = tensors
                .keys()
                .filter(|k| !self.contains(k))
                .map(String::as_str)
                .collect();
            if !extra.is_empty() {
                extra.sort_unstable();
                return Err(Error::ParamMismatch(format!(
                    "unexpected {}",
                    extra.join(", ")
                )));
            }
        }
        for param in self.entries() {
            let value = &tensors[&param.name];
            if value.shape() != param.var.shape() {
                return Err(Error::ParamMismatch(format!(
                    "{} has shape {:?}, the model expects {:?}",
                    param.name,
                    value.dims(),
                    param.var.dims()
                )));
            }
            let value = value.to_dtype(DType::F32)?.to_device(&self.device)?;
            param.var.set(&value)?;
        }
        Ok(())
    }

    /// Copies every value of `other` (same names and shapes) into this store.
    pub fn copy_from(&self, other: &ParamStore) -> Result<()> {
        self.load(&other.tensors()?, false)
    }

    /// Copies into this store the values of `other` for every parameter of this store
    /// (`other` may hold more, e.g. a student's predictor that the teacher lacks).
    pub fn copy_matching(&self, other: &ParamStore) -> Result<()> {
        self.load(&other.tensors()?, true)
    }

    /// Overwrites the parameters whose names start with `prefix` with `tensors` keyed by
    /// the rest of the name (e.g. a backbone checkpoint into `backbone.`); every such
    /// parameter must be present, others in `tensors` are ignored.
    pub fn load_prefixed(&self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<usize> {
        let mut loaded = 0;
        for param in self.entries().filter(|p| p.name.starts_with(prefix)) {
            let short = &param.name[prefix.len()..];
            let value = tensors
                .get(short)
                .ok_or_else(|| Error::ParamMismatch(format!("missing {short}")))?;
            if value.shape() != param.var.shape() {
                return Err(Error::ParamMismatch(format!(
                    "{short} has shape {:?}, the model expects {:?}",
                    value.dims(),
                    param.var.dims()
                )));
            }
            param
                .var
                .set(&value.to_dtype(DType::F32)?.to_device(&self.device)?)?;
            loaded += 1;
        }
        Ok(loaded)
    }
}

struct BuilderState {
    store: ParamStore,
    rng: StdRng,
    track_grad: bool,
}

/// Creates parameters under a name prefix; cheap to clone, like candle's `VarBuilder`.
#[derive(Clone)]
pub struct ParamBuilder {
    state: Arc<Mutex<BuilderState>>,
    prefix: String,
}

impl std::fmt::Debug for ParamBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ParamBuilder {
    /// A builder for a network whose gradients are wanted (a student).
    pub fn trainable(device: &Device, seed: u64) -> Self {
        Self::new(device, seed, true)
    }

    /// A builder for a network that is never differentiated (a teacher, an embedder):
    /// its tensors are detached, so forward passes record no graph.
    pub fn frozen(device: &Device, seed: u64) -> Self {
        Self::new(device, seed, false)
    }

    fn new(device: &Device, seed: u64, track_grad: bool) -> Self {
        let state = BuilderState {
            store: ParamStore::new(device),
            rng: StdRng::seed_from_u64(seed),
            track_grad,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            prefix: String::new(),
        }
    }

    /// A builder whose names are prefixed with `name.`.
    pub fn push(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            state: Arc::clone(&self.state),
            prefix,
        }
    }

    /// Creates a trainable parameter and returns the tensor the network computes with.
    pub fn param(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        self.create(name, shape.into(), init, true)
    }

    /// Creates a parameter the optimizer leaves alone (still saved, loaded and EMA'd).
    pub fn fixed_param(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        self.create(name, shape.into(), init, false)
    }

    /// Creates a buffer (a BatchNorm running statistic): saved and loaded, never
    /// trained nor EMA'd. Buffers draw no random numbers, so they do not shift the
    /// initialisation of later parameters.
    pub fn buffer(&self, name: &str, shape: impl Into<Shape>, value: f32) -> Result<Var> {
        let full_name = self.full_name(name);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let shape = shape.into();
        let values = vec![value; shape.elem_count()];
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, &state.store.device)?)?;
        let store = &mut state.store;
        if store.contains(&full_name) {
            return Err(Error::Config(format!("buffer {full_name} created twice")));
        }
        store.buffers.push(Param {
            name: full_name,
            var: var.clone(),
            trainable: false,
        });
        Ok(var)
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn create(&self, name: &str, shape: Shape, init: Init, trainable: bool) -> Result<Tensor> {
        let full_name = self.full_name(name);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let values = sample_init(&mut state.rng, init, shape.elem_count());
        let device = state.store.device.clone();
        let tensor = Tensor::from_vec(values, shape, &device)?;
        let var = Var::from_tensor(&tensor)?;
        let usable = if state.track_grad {
            var.as_tensor().clone()
        } else {
            var.as_detached_tensor()
        };
        let store = &mut state.store;
        if store.contains(&full_name) {
            return Err(Error::Config(format!(
                "parameter {full_name} created twice"
            )));
        }
        store.index.insert(full_name.clone(), store.params.len());
        store.params.push(Param {
            name: full_name,
            var,
            trainable,
        });
        Ok(usable)
    }

    /// The store holding everything created so far through this builder or its clones.
    pub fn store(&self) -> ParamStore {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.store.clone()
    }
}

fn sample_init(rng: &mut StdRng, init: Init, n: usize) -> Vec<f32> {
    match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::TruncNormal(std) => {
            // std is a positive constant chosen by the model code, never user input.
            let normal = Normal::new(0.0, std).unwrap_or_else(|_| unreachable!("std > 0"));
            (0..n)
                .map(|_| loop {
                    let v: f64 = normal.sample(rng);
                    if (-2.0..=2.0).contains(&v) {
                        break v as f32;
                    }
                })
                .collect()
        }
        Init::Normal(std) => {
            let normal = Normal::new(0.0, std).unwrap_or_else(|_| unreachable!("std > 0"));
            (0..n).map(|_| normal.sample(rng) as f32).collect()
        }
        Init::Uniform(bound) => {
            let uniform = Uniform::new_inclusive(-bound, bound)
                .unwrap_or_else(|_| unreachable!("bound is finite"));
            (0..n).map(|_| rng.sample(uniform) as f32).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prefixes_and_order() -> Result<()> {
        let pb = ParamBuilder::trainable(&Device::Cpu, 0);
        pb.push("a").param("w", (2, 3), Init::Zeros)?;
        pb.push("b").push(0).fixed_param("g", 4, Init::Ones)?;
        let store = pb.store();
        let names: Vec<_> = store.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a.w", "b.0.g"]);
        assert!(store.params()[0].trainable);
        assert!(!store.params()[1].trainable);
        assert_eq!(store.num_values(), 10);
        Ok(())
    }

    #[test]
    fn tensors_share_storage_with_vars() -> Result<()> {
        let pb = ParamBuilder::frozen(&Device::Cpu, 0);
        let t = pb.param("w", 3, Init::Zeros)?;
        let store = pb.store();
        store.params()[0]
            .var
            .set(&Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?)?;
        assert_eq!(t.to_vec1::<f32>()?, [1., 2., 3.]);
        assert!(!t.is_variable());
        Ok(())
    }

    #[test]
    fn load_reports_missing_and_misshaped() -> Result<()> {
        let pb = ParamBuilder::trainable(&Device::Cpu, 0);
        pb.param("w", (2, 2), Init::Zeros)?;
        let store = pb.store();
        let mut tensors = HashMap::new();
        assert!(matches!(
            store.load(&tensors, false),
            Err(Error::ParamMismatch(_))
        ));
        tensors.insert("w".to_string(), Tensor::zeros(3, DType::F32, &Device::Cpu)?);
        assert!(matches!(
            store.load(&tensors, false),
            Err(Error::ParamMismatch(_))
        ));
        Ok(())
    }

    #[test]
    fn trunc_normal_has_requested_spread() {
        let mut rng = StdRng::seed_from_u64(1);
        let v = sample_init(&mut rng, Init::TruncNormal(0.02), 20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 1e-3, "std {}", var.sqrt());
    }
}
