use std::path::PathBuf;

use image::RgbImage;

use super::*;

fn sample(name: &str) -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("samples/photos")
        .join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn verified(a: &str, b: &str) -> Verification {
    verify(&keypoints_of(&sample(a)), &keypoints_of(&sample(b)), 1)
}

#[test]
fn a_crop_and_a_mirrored_copy_are_verified_and_other_photos_are_not() {
    let crop = verified("garden.jpg", "edited/garden-cropped.jpg");
    assert!(crop.inliers >= 40 && !crop.mirrored, "{crop:?}");
    let mirror = verified("ladybird.jpg", "edited/ladybird-mirrored.jpg");
    assert!(mirror.inliers >= 40 && mirror.mirrored, "{mirror:?}");
    let grey = verified("dune.jpg", "edited/dune-grey.jpg");
    assert!(grey.inliers >= 40 && !grey.mirrored, "{grey:?}");
    for (a, b) in [
        ("garden.jpg", "greenmeadow.jpg"),
        ("ladybird.jpg", "dragonfly_by_bolly.jpg"),
        ("picture_0b_by_freespace.jpg", "picture_1a_by_freespace.jpg"),
    ] {
        let other = verified(a, b);
        assert!(other.inliers < 12, "{a} / {b}: {other:?}");
    }
}

#[test]
fn mirroring_a_photo_swaps_the_halves_of_its_descriptors() {
    let img = sample("garden.jpg");
    let mirrored = image::imageops::flip_horizontal(&img);
    let (a, b) = (keypoints_of(&img), keypoints_of(&mirrored));
    assert!(a.points.len() > 100, "{}", a.points.len());
    let (mut close, mut found) = (0, 0);
    for p in &a.points {
        let x = a.width as f32 - 1.0 - p.x;
        let Some(q) = b
            .points
            .iter()
            .find(|q| (q.x - x).abs() < 0.5 && q.y == p.y)
        else {
            continue;
        };
        found += 1;
        close += usize::from(hamming(&mirror_bits(&p.bits), &q.bits) <= 16);
    }
    assert!(
        found * 2 >= a.points.len(),
        "{found} of {} found again",
        a.points.len()
    );
    assert!(close * 10 >= found * 9, "{close} of {found} alike");
}

#[test]
fn the_stored_form_reads_back_and_rejects_other_bytes() {
    let kp = keypoints_of(&sample("storm.jpg"));
    let bytes = kp.to_bytes();
    let back = Keypoints::from_bytes(&bytes).expect("reads back");
    assert_eq!((back.width, back.height), (kp.width, kp.height));
    assert_eq!(back.points.len(), kp.points.len());
    for (p, q) in kp.points.iter().zip(&back.points) {
        assert_eq!(p.bits, q.bits);
        assert!((p.x - q.x).abs() < 0.1 && (p.y - q.y).abs() < 0.1);
    }
    assert!(
        Keypoints::from_bytes(&bytes[..bytes.len() - 1]).is_none(),
        "truncated"
    );
    assert!(Keypoints::from_bytes(&[]).is_none(), "empty");
    let mut other = bytes.clone();
    other[0] = 99;
    assert!(Keypoints::from_bytes(&other).is_none(), "unknown format");
}

#[test]
fn tiny_and_flat_photos_have_no_keypoints_and_verify_to_nothing() {
    for (w, h) in [(1, 1), (5, 400), (16, 16)] {
        let kp = keypoints_of(&RgbImage::new(w, h));
        assert!(kp.points.is_empty(), "{w}×{h}");
    }
    let flat = keypoints_of(&RgbImage::from_pixel(300, 200, image::Rgb([90, 120, 200])));
    assert!(flat.points.is_empty());
    assert_eq!(verify(&flat, &flat, 0).inliers, 0);
}
