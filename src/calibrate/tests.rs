use std::path::PathBuf;

use super::*;

fn sample_paths() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/photos");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    paths.sort();
    paths
}

fn stored_of(image: &RgbImage) -> Stored {
    Stored {
        hash: Some(DihedralHash::new(&perceptual_hash(image))),
        keypoints: Some(keypoints_of(image)),
    }
}

fn score(hash: f32, inliers: u32) -> PairScore {
    PairScore {
        hash: Some(hash),
        inliers,
        fewest_keypoints: 300,
    }
}

#[test]
fn the_precision_bound_never_promises_more_than_the_sample_can_show() {
    assert_eq!(precision_bound(0, 0), 0.0);
    let none_wrong = precision_bound(600, 0);
    assert!((none_wrong - 600.0 / 603.0).abs() < 1e-4, "{none_wrong}");
    let one_wrong = 600.0 / precision_bound(600, 1) - 600.0;
    assert!(
        (one_wrong - 4.74).abs() < 0.05,
        "the 95 % bound of one is 4.74: {one_wrong}"
    );
    assert!(precision_bound(600, 1) < none_wrong);
    assert!(
        precision_bound(100, 0) < 0.99,
        "100 copies cannot show 0.99"
    );
    assert!(precision_bound(6000, 4) > 0.99);
}

#[test]
fn a_plain_photo_is_not_verified_whatever_its_inliers() {
    let plain = PairScore {
        hash: None,
        inliers: 40,
        fewest_keypoints: 12,
    };
    assert!(plain.verified(12));
    assert!(
        !plain.verified(16),
        "16 inliers need 16 keypoints on each photo"
    );
    assert!(!plain.hashed(0.5));
}

#[test]
fn the_chosen_rule_has_the_most_recall_that_keeps_the_precision() {
    // Right pairs: verified copies with 10..=29 inliers (and hash 0.6, below the grid);
    // wrong pairs: 30 candidates verified with 12 inliers, and one with 20.
    let right: Vec<(PairScore, Vec<String>)> = (0..2000)
        .map(|i| (score(0.6, 10 + (i % 20) as u32), vec!["crop".to_string()]))
        .collect();
    let mut wrong: Vec<PairScore> = (0..30).map(|_| score(0.5, 12)).collect();
    wrong.push(score(0.5, 20));
    let scores = Scores {
        right,
        wrong_candidates: wrong,
        wrong_hashes: vec![0.65, 0.7],
        originals: 200,
        left_out: 3,
        ..Scores::default()
    };
    let c = Calibration::from_scores("m", 5000, &scores, true);
    let p = c.point_for(0.99).expect("a rule reaches 0.99");
    // 10 and 12 inliers link the 30 wrong pairs; 14 links only the one with 20 inliers.
    assert_eq!(p.min_inliers, 14);
    assert_eq!(p.wrong_links, 1);
    assert!(
        p.hash_agreement >= 0.72,
        "the hash at 0.70 links a wrong pair: {p:?}"
    );
    assert!((p.recall - 0.8).abs() < 1e-9, "{p:?}");
    assert_eq!(c.edits.len(), 1);
    assert_eq!(c.edits[0].edit, "crop");
    assert!(c.point_for(0.9999).is_none());
    let looser = c.point_for(0.5).expect("some rule");
    assert_eq!(
        looser.min_inliers, 10,
        "at 0.5 the wrong links are affordable"
    );
}

#[test]
fn copies_of_a_photo_link_to_it_and_not_to_other_photos() {
    let images: Vec<RgbImage> = sample_paths()
        .iter()
        .take(6)
        .map(|p| {
            image::open(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .to_rgb8()
        })
        .collect();
    let original = Original {
        image: images[0].clone(),
        stored: stored_of(&images[0]),
        neighbours: images[1..].iter().map(stored_of).collect(),
    };
    let pool: Vec<DihedralHash> = images
        .iter()
        .filter_map(|img| stored_of(img).hash)
        .collect();
    let scores = score_copies(&original, Some(&pool), 8, 7);
    assert_eq!((scores.originals, scores.left_out), (1, 0));
    assert_eq!(scores.right.len(), 8);
    assert_eq!(scores.wrong_candidates.len(), 8 * 5);
    let linked = scores
        .right
        .iter()
        .filter(|(s, _)| s.linked(0.69, 16))
        .count();
    assert!(linked >= 6, "{:?}", scores.right);
    let wrong = scores
        .wrong_candidates
        .iter()
        .filter(|s| s.linked(0.69, 16))
        .count();
    assert_eq!(wrong, 0, "{:?}", scores.wrong_candidates);
    assert!(scores.wrong_hashes.iter().all(|&a| a >= HASH_GRID[0]));
}

#[test]
fn a_photo_whose_copy_is_already_in_the_collection_is_left_out() {
    let path = &sample_paths()[0];
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let mirrored = image::imageops::flip_horizontal(&image);
    let original = Original {
        image: image.clone(),
        stored: stored_of(&image),
        neighbours: vec![stored_of(&mirrored)],
    };
    let scores = score_copies(&original, None, 3, 1);
    assert_eq!((scores.originals, scores.left_out), (0, 1));
    assert!(scores.right.is_empty());
}

#[test]
fn calibration_is_asked_for_again_when_the_collection_or_model_changes() {
    let c = Calibration::from_scores("m", 1000, &Scores::default(), true);
    assert!(!needs_calibration(None, MIN_PHOTOS - 1, "m"));
    assert!(needs_calibration(None, MIN_PHOTOS, "m"));
    assert!(!needs_calibration(Some(&c), 1050, "m"));
    assert!(needs_calibration(Some(&c), 1150, "m"));
    assert!(needs_calibration(Some(&c), 850, "m"));
    assert!(needs_calibration(Some(&c), 1000, "other"));
}

#[test]
fn the_calibration_reads_back_from_the_workspace() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(
        Calibration::load(dir.path()).expect("no file is no calibration"),
        None
    );
    let scores = Scores {
        right: vec![(score(0.9, 50), vec!["jpeg".to_string()]); 700],
        ..Scores::default()
    };
    let c = Calibration::from_scores("m", 100, &scores, false);
    c.save(dir.path()).expect("saved");
    let back = Calibration::load(dir.path()).expect("read").expect("saved");
    let rule = |c: &Calibration| c.point_for(0.99).map(|p| (p.hash_agreement, p.min_inliers));
    assert_eq!(
        (back.copies, back.points.len(), rule(&back)),
        (700, c.points.len(), rule(&c))
    );
    assert!(rule(&c).is_some());
    std::fs::write(Calibration::path(dir.path()), "{").expect("written");
    let err = Calibration::load(dir.path()).expect_err("a broken file is an error");
    assert!(err.to_string().contains(CALIBRATION_FILE), "{err}");
}
