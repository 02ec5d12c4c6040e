//! The momentum teacher: `teacher ← m·teacher + (1 − m)·student` over every teacher
//! parameter, fixed weight-norm magnitudes included, as the official loop does. Student
//! parameters the teacher does not have (the predictor ablation's MLP) are left out.

use std::collections::HashMap;

use candle_core::DType;

use super::inplace::EmaUpdate;
use crate::model::{Param, ParamStore};
use crate::{Error, Result};

/// Moves every teacher parameter towards the student parameter of the same name.
pub fn ema_update(teacher: &ParamStore, student: &ParamStore, momentum: f64) -> Result<()> {
    let by_name: HashMap<&str, &Param> = student
        .params()
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();
    for t in teacher.params() {
        let s = by_name.get(t.name.as_str()).ok_or_else(|| {
            Error::ParamMismatch(format!("the student has no {} for the teacher", t.name))
        })?;
        if t.var.device().is_cpu() && t.var.dtype() == DType::F32 {
            let op = EmaUpdate {
                momentum: momentum as f32,
                student_weight: (1.0 - momentum) as f32,
            };
            t.var.as_tensor().inplace_op2(s.var.as_tensor(), &op)?;
            continue;
        }
        let blended = ((t.var.as_detached_tensor() * momentum)?
            + (s.var.as_detached_tensor() * (1.0 - momentum))?)?;
        t.var.set(&blended)?;
    }
    Ok(())
}
