//! Tests of the whole pipeline: `make_views`, `render`, `eval_view`, `views_to_tensors`.

use super::*;
use image::Rgb;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Test outcome: any error fails the test.
type TestResult = Result<(), Box<dyn std::error::Error>>;

fn small_cfg() -> ViewsConfig {
    ViewsConfig {
        global_size: 32,
        local_size: 16,
        local_crops: 3,
        ..ViewsConfig::default()
    }
}

fn noise_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    RgbImage::from_fn(w, h, |_, _| Rgb([rng.random(), rng.random(), rng.random()]))
}

/// Parameters that change nothing but the crop.
fn plain(crop: CropRect) -> ViewParams {
    ViewParams {
        crop,
        flip: false,
        jitter: None,
        gray: false,
        blur_sigma: None,
        solarize: false,
    }
}

#[test]
fn make_views_sizes_and_order() -> TestResult {
    let img = noise_image(80, 60, 1);
    let views = make_views(&img, &small_cfg(), &mut StdRng::seed_from_u64(0))?;
    let sizes: Vec<u32> = views.iter().map(|v| v.size).collect();
    assert_eq!(sizes, vec![32, 32, 16, 16, 16]);
    for v in &views {
        assert_eq!(v.data.len(), 3 * (v.size * v.size) as usize);
        assert!(v.data.iter().all(|x| x.is_finite() && x.abs() < 3.0));
    }
    Ok(())
}

#[test]
fn make_views_is_deterministic_per_seed() -> TestResult {
    let img = noise_image(70, 50, 2);
    let cfg = small_cfg();
    let a = make_views(&img, &cfg, &mut StdRng::seed_from_u64(5))?;
    let b = make_views(&img, &cfg, &mut StdRng::seed_from_u64(5))?;
    let c = make_views(&img, &cfg, &mut StdRng::seed_from_u64(6))?;
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Bit-identical, not just approximately equal.
    let bits = |v: &[View]| -> Vec<u32> {
        v.iter()
            .flat_map(|v| v.data.iter().map(|x| x.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    Ok(())
}

/// With the curation edits the views keep their sizes, stay deterministic per seed, and
/// differ from the paper's views of the same draws.
#[test]
fn curation_views_are_deterministic_and_edited() -> TestResult {
    let img = noise_image(70, 50, 2);
    let cfg = ViewsConfig {
        curation: true,
        ..small_cfg()
    };
    let mut edited = 0;
    for seed in 0..20 {
        let a = make_views(&img, &cfg, &mut StdRng::seed_from_u64(seed))?;
        let b = make_views(&img, &cfg, &mut StdRng::seed_from_u64(seed))?;
        assert_eq!(a, b);
        let sizes: Vec<u32> = a.iter().map(|v| v.size).collect();
        assert_eq!(sizes, vec![32, 32, 16, 16, 16]);
        let plain = make_views(&img, &small_cfg(), &mut StdRng::seed_from_u64(seed))?;
        edited += usize::from(a != plain);
    }
    assert!(edited >= 15, "only {edited} of 20 view sets changed");
    Ok(())
}

#[test]
fn constant_gray_image_normalises_to_the_expected_values() -> TestResult {
    let img = RgbImage::from_pixel(40, 30, Rgb([128, 128, 128]));
    let v = 128.0 / 255.0;
    let crop = random_resized_crop(
        40,
        30,
        (0.4, 1.0),
        CROP_RATIO,
        &mut StdRng::seed_from_u64(1),
    );
    let mut params = plain(crop);
    params.flip = true;
    params.gray = true;
    params.blur_sigma = Some(1.3);
    let view = render(&img, 24, &params)?;
    let n = 24 * 24;
    for c in 0..3 {
        let expected = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        assert!(view.data[c * n..(c + 1) * n]
            .iter()
            .all(|x| (x - expected).abs() < 1e-5));
    }
    Ok(())
}

#[test]
fn make_views_on_constant_image_stays_near_mid_gray() -> TestResult {
    // Jitter/solarize may move the values, but never beyond the [0, 1] range's image.
    let img = RgbImage::from_pixel(50, 50, Rgb([128, 128, 128]));
    let views = make_views(&img, &small_cfg(), &mut StdRng::seed_from_u64(3))?;
    for v in &views {
        let n = (v.size * v.size) as usize;
        for c in 0..3 {
            let (lo, hi) = (
                -IMAGENET_MEAN[c] / IMAGENET_STD[c],
                (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c],
            );
            assert!(v.data[c * n..(c + 1) * n]
                .iter()
                .all(|x| *x >= lo - 1e-5 && *x <= hi + 1e-5));
        }
    }
    Ok(())
}

#[test]
fn make_views_handles_tiny_and_extreme_images() -> TestResult {
    let cfg = small_cfg();
    let mut rng = StdRng::seed_from_u64(4);
    for (w, h) in [(1, 1), (5, 3), (1000, 10), (10, 1000)] {
        let img = noise_image(w, h, 5);
        let views = make_views(&img, &cfg, &mut rng)?;
        assert_eq!(views.len(), 5);
    }
    Ok(())
}

#[test]
fn empty_image_and_bad_config_are_errors() {
    let mut rng = StdRng::seed_from_u64(0);
    let empty = RgbImage::new(0, 10);
    assert!(matches!(
        make_views(&empty, &small_cfg(), &mut rng),
        Err(ViewsError::EmptyImage { .. })
    ));
    assert!(eval_view(&empty, 8).is_err());
    let img = noise_image(8, 8, 0);
    let bad = ViewsConfig {
        global_scale: (0.0, 1.0),
        ..small_cfg()
    };
    assert!(matches!(
        make_views(&img, &bad, &mut rng),
        Err(ViewsError::Config(_))
    ));
    let bad = ViewsConfig {
        global_size: 0,
        ..small_cfg()
    };
    assert!(make_views(&img, &bad, &mut rng).is_err());
}

#[test]
fn render_flip_mirrors_the_view() -> TestResult {
    let img = noise_image(20, 20, 6);
    let crop = CropRect {
        left: 2,
        top: 3,
        width: 12,
        height: 12,
        fallback: false,
    };
    let a = render(&img, 12, &plain(crop))?;
    let b = render(
        &img,
        12,
        &ViewParams {
            flip: true,
            ..plain(crop)
        },
    )?;
    for c in 0..3 {
        for y in 0..12 {
            for x in 0..12 {
                assert_eq!(
                    a.data[c * 144 + y * 12 + x],
                    b.data[c * 144 + y * 12 + 11 - x]
                );
            }
        }
    }
    // An identity-size crop is copied exactly.
    let v = (f32::from(img.get_pixel(2, 3)[1]) / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1];
    assert_eq!(a.data[144], v);
    Ok(())
}

#[test]
fn eval_view_crops_centrally() -> TestResult {
    // Horizontal ramp: Resize(64) makes 400x100 into 256x64; the 56 crop starts at x = 100.
    let ramp = |x: u32| (f64::from(x) * 255.0 / 399.0).round() as u8;
    let img = RgbImage::from_fn(400, 100, |x, _| Rgb([ramp(x); 3]));
    let view = eval_view(&img, 56)?;
    assert_eq!(view.size, 56);
    assert_eq!(view.data.len(), 3 * 56 * 56);
    let row = &view.data[28 * 56..29 * 56];
    for (x, &got) in row.iter().enumerate().take(53).skip(3) {
        let src = (100.0 + x as f64 + 0.5) / 0.64 - 0.5;
        let expected = ((src / 399.0) as f32 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!(
            (got - expected).abs() < 2.0 / 255.0 / IMAGENET_STD[0],
            "x={x}: {got} vs {expected}"
        );
    }
    // Tall image, vertically symmetric: the centre crop is symmetric too.
    let sym = RgbImage::from_fn(90, 200, |_, y| Rgb([(y.min(199 - y)) as u8; 3]));
    let v = eval_view(&sym, 32)?;
    for x in 0..32 {
        assert!((v.data[x] - v.data[31 * 32 + x]).abs() < 1e-2);
    }
    Ok(())
}

#[test]
fn eval_region_matches_resize_then_centre_crop() {
    let r = eval_region(500, 375, 224);
    // Resize(256): 341x256, centre crop 224 at (58, 16) in resized pixels.
    let s = 375.0 / 256.0;
    assert!((r.top - 16.0 * s).abs() < 1e-9 && (r.height - 224.0 * s).abs() < 1e-9);
    let sx = 500.0 / 341.0;
    assert!((r.left - 58.0 * sx).abs() < 1e-9 && (r.width - 224.0 * sx).abs() < 1e-9);
}

#[test]
fn views_to_tensors_stacks_per_view_index() -> TestResult {
    let cfg = small_cfg();
    let mut rng = StdRng::seed_from_u64(9);
    let batch: Vec<Vec<View>> = (0..4)
        .map(|i| make_views(&noise_image(40, 40, i), &cfg, &mut rng))
        .collect::<Result<_, _>>()?;
    let tensors = views_to_tensors(&batch, &Device::Cpu)?;
    let dims: Vec<Vec<usize>> = tensors.iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![
            vec![4, 3, 32, 32],
            vec![4, 3, 32, 32],
            vec![4, 3, 16, 16],
            vec![4, 3, 16, 16],
            vec![4, 3, 16, 16]
        ]
    );
    let img2_view3: Vec<f32> = tensors[3].get(2)?.flatten_all()?.to_vec1()?;
    assert_eq!(img2_view3, batch[2][3].data);
    assert!(views_to_tensors(&[], &Device::Cpu)?.is_empty());
    let ragged = vec![batch[0].clone(), batch[1][..2].to_vec()];
    assert!(views_to_tensors(&ragged, &Device::Cpu).is_err());
    Ok(())
}

#[test]
fn eval_view_of_images_smaller_than_the_view_does_not_crash() -> TestResult {
    // 22 × 22 and 66 × 66 at 96 px crashed inside fast_image_resize before the region was
    // kept clear of zero weights at its edges (crop::clear_of_zero_edges)
    for side in 16..80 {
        for (size, h) in [
            (96, side),
            (96, side * 4 / 3),
            (128, side),
            (224, side + side % 7),
        ] {
            let img = noise_image(side, h, u64::from(side));
            let view = eval_view(&img, size)?;
            assert_eq!(view.data.len(), (size * size * 3) as usize);
            let whole = whole_view(&img, size)?;
            assert_eq!(whole.data.len(), (size * size * 3) as usize);
        }
    }
    Ok(())
}
