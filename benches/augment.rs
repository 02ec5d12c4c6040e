//! Cost of the DINO multi-crop augmentation per image (2×96 + 6×48 views from a
//! 500×375 photo, the CPU preset) and of the evaluation view.
//! Run: `cargo bench --bench augment`.

use std::hint::black_box;
use std::time::Instant;

use dino_curate::train::views::{eval_view, make_views, ViewsConfig};
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn noise_photo(w: u32, h: u32) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(1);
    RgbImage::from_fn(w, h, |x, y| {
        let base = ((x + y) % 256) as u8;
        Rgb([base, rng.random(), base.wrapping_mul(3)])
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let img = noise_photo(500, 375);
    let cfg = ViewsConfig {
        global_size: 96,
        local_size: 48,
        local_crops: 6,
        ..ViewsConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(0);
    for _ in 0..20 {
        make_views(&img, &cfg, &mut rng)?;
    }
    let runs = 500u32;
    let start = Instant::now();
    for _ in 0..runs {
        black_box(make_views(&img, &cfg, &mut rng)?);
    }
    println!(
        "make_views 2x96 + 6x48 from 500x375: {:?} per image",
        start.elapsed() / runs
    );
    let start = Instant::now();
    for _ in 0..runs {
        black_box(eval_view(&img, 96)?);
    }
    println!(
        "eval_view 96 from 500x375: {:?} per image",
        start.elapsed() / runs
    );
    Ok(())
}
