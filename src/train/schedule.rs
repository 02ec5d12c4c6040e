//! Per-iteration schedules, bit-compatible with the official `utils.cosine_scheduler`
//! and the `DINOLoss` teacher-temperature schedule (both built with NumPy there).

/// `np.linspace(start, stop, num)` (endpoint included), computed as NumPy does:
/// `i * step + start`, with the last value set to `stop` exactly.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            values[num - 1] = stop;
            values
        }
    }
}

/// The official `cosine_scheduler`: a linear warm-up from `start_warmup_value` to
/// `base_value` over `warmup_epochs` (endpoint included, so `base_value` appears twice),
/// then a half cosine from `base_value` towards `final_value` that stops one step short
/// of it. One value per iteration, `epochs * niter_per_ep` in all.
pub fn cosine_scheduler(
    base_value: f64,
    final_value: f64,
    epochs: usize,
    niter_per_ep: usize,
    warmup_epochs: usize,
    start_warmup_value: f64,
) -> Vec<f64> {
    cosine_steps(
        base_value,
        final_value,
        epochs * niter_per_ep,
        warmup_epochs * niter_per_ep,
        start_warmup_value,
    )
}

/// [`cosine_scheduler`] laid out in steps: `total` values, the first `warmup` of them
/// (at most `total`) the linear warm-up.
pub fn cosine_steps(
    base_value: f64,
    final_value: f64,
    total: usize,
    warmup: usize,
    start_warmup_value: f64,
) -> Vec<f64> {
    let warmup_iters = warmup.min(total);
    let mut schedule = linspace(start_warmup_value, base_value, warmup_iters);
    let cosine_iters = total - warmup_iters;
    let amplitude = 0.5 * (base_value - final_value);
    schedule.extend((0..cosine_iters).map(|i| {
        let angle = std::f64::consts::PI * i as f64 / cosine_iters as f64;
        final_value + amplitude * (1.0 + angle.cos())
    }));
    schedule
}

/// The teacher temperature per epoch: linear from `warmup_temp` to `temp` over
/// `warmup_epochs` (endpoint included), then `temp`.
pub fn teacher_temp_schedule(
    warmup_temp: f64,
    temp: f64,
    warmup_epochs: usize,
    epochs: usize,
) -> Vec<f64> {
    let warmup = warmup_epochs.min(epochs);
    let mut schedule = linspace(warmup_temp, temp, warmup);
    schedule.resize(epochs, temp);
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_edges() {
        // np.linspace(0.04, 0.07, 3).tolist()
        assert_eq!(linspace(0.04, 0.07, 3), [0.04, 0.05500000000000001, 0.07]);
        assert_eq!(linspace(1.0, 2.0, 1), [1.0]);
        assert!(linspace(1.0, 2.0, 0).is_empty());
    }

    #[test]
    fn cosine_keeps_the_official_quirks() {
        let s = cosine_scheduler(1.0, 0.0, 4, 2, 1, 0.0);
        assert_eq!(s.len(), 8);
        // warm-up ends on base_value and the cosine starts on it again
        assert_eq!(&s[..3], &[0.0, 1.0, 1.0]);
        // the last value is not final_value
        assert!(s[7] > 0.0);
    }

    #[test]
    fn teacher_temp_warms_up_then_stays() {
        let s = teacher_temp_schedule(0.04, 0.07, 3, 10);
        assert_eq!(s.len(), 10);
        assert_eq!(s[0], 0.04);
        assert!(s[2..].iter().all(|&t| t == 0.07));
    }
}
