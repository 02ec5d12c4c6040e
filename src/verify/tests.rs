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

/// `img` pasted at `(x, y)` on a `w × h` canvas of one colour.
fn padded(img: &RgbImage, w: u32, h: u32, x: i64, y: i64, colour: [u8; 3]) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(w, h, image::Rgb(colour));
    image::imageops::overlay(&mut canvas, img, x, y);
    canvas
}

/// How `b` was framed from `a`, and how `a` was framed from `b`.
fn edits(a: &RgbImage, b: &RgbImage) -> (Option<FramingEdit>, Option<FramingEdit>) {
    let found = framing(&keypoints_of(a), &keypoints_of(b), 3).expect("the pair verifies");
    (found.edit_of_a(), found.swapped().edit_of_a())
}

#[test]
fn framing_tells_a_crop_and_padded_copies_from_their_original() {
    let garden = sample("garden.jpg");
    let crop = sample("edited/garden-cropped.jpg");
    let _ = edits(&garden, &crop);
    assert_eq!(edits(&crop, &garden), (None, Some(FramingEdit::Crop)));
    let (gw, gh) = garden.dimensions();
    let letterboxed = padded(&garden, gw, gh * 3 / 2, 0, i64::from(gh / 4), [0, 0, 0]);
    assert_eq!(
        edits(&garden, &letterboxed),
        (Some(FramingEdit::Padding), None)
    );
    let framed = padded(&garden, gw + 60, gh + 60, 30, 30, [255, 255, 255]);
    assert_eq!(edits(&garden, &framed), (Some(FramingEdit::Padding), None));
    let pillarboxed = padded(
        &garden,
        gw + gw / 2,
        gh,
        i64::from(gw / 4),
        0,
        [20, 90, 160],
    );
    assert_eq!(edits(&pillarboxed, &garden).1, Some(FramingEdit::Padding));
}

#[test]
fn framing_leaves_same_frame_copies_and_other_photos_alone() {
    let dune = sample("dune.jpg");
    let grey = sample("edited/dune-grey.jpg");
    assert_eq!(edits(&dune, &grey), (None, None), "same frame");
    let ladybird = sample("ladybird.jpg");
    let mirrored = sample("edited/ladybird-mirrored.jpg");
    assert_eq!(
        edits(&ladybird, &mirrored),
        (None, None),
        "mirrored, same frame"
    );
    let other = framing(
        &keypoints_of(&sample("garden.jpg")),
        &keypoints_of(&sample("greenmeadow.jpg")),
        3,
    );
    assert!(other.is_none(), "{other:?}");
    let storm = keypoints_of(&sample("storm.jpg"));
    let letterboxed = keypoints_of(&sample("edited/storm-letterboxed.jpg"));
    assert!(
        framing(&storm, &letterboxed, 3).is_none(),
        "too few corners to frame: the stored padding judges this pair"
    );
}

/// `img` with a caption drawn in a band near its bottom: blocky letters, black on white
/// boxes, as a meme generator or a watermark tool would leave.
fn captioned(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = img.dimensions();
    let (size, top) = (h / 14, h * 4 / 5);
    for letter in 0..(w * 3 / 4 / (size + size / 3)) {
        let left = w / 8 + letter * (size + size / 3);
        for y in top..top + size {
            for x in left..left + size * 3 / 4 {
                let stroke = (x - left) < size / 6
                    || (y - top) < size / 6
                    || (letter % 3 == 0 && (y - top) > size / 2 && (y - top) < size * 2 / 3);
                let v = if stroke { 0 } else { 255 };
                out.put_pixel(x, y, image::Rgb([v, v, v]));
            }
        }
    }
    out
}

#[test]
fn framing_finds_marks_drawn_on_a_copy() {
    let garden = sample("garden.jpg");
    let found = framing(
        &keypoints_of(&garden),
        &keypoints_of(&captioned(&garden)),
        3,
    )
    .expect("the pair verifies");
    assert_eq!(
        (found.edit_of_a(), found.swapped().edit_of_a()),
        (Some(FramingEdit::Marks), None),
        "{found:?}"
    );
}
