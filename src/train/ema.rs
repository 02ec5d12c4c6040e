//! The momentum teacher: `teacher ← m·teacher + (1 − m)·student` over every parameter,
//! fixed weight-norm magnitudes included, as the official loop does.

use candle_core::DType;

use super::inplace::EmaUpdate;
use crate::model::ParamStore;
use crate::{Error, Result};

/// Moves every teacher parameter towards the student parameter of the same position.
pub fn ema_update(teacher: &ParamStore, student: &ParamStore, momentum: f64) -> Result<()> {
    if teacher.params().len() != student.params().len() {
        return Err(Error::ParamMismatch(
            "teacher and student have different parameter lists".into(),
        ));
    }
    for (t, s) in teacher.params().iter().zip(student.params()) {
        if t.name != s.name {
            return Err(Error::ParamMismatch(format!(
                "{} paired with {}",
                t.name, s.name
            )));
        }
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
