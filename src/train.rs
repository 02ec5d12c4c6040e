//! DINO training maths, as the official `main_dino.py` and `utils.py` do it.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod ema;
pub mod inplace;
pub mod loss;
pub mod optim;
pub mod plan;
pub mod plot;
pub mod schedule;
pub mod signal;
pub mod step;
pub mod trainer;
pub mod views;
