use super::*;

/// Unit vectors at the given angles (radians) in the plane.
fn at_angles(angles: &[f32]) -> Vectors {
    let mut v = Vectors::new(2);
    for (i, a) in angles.iter().enumerate() {
        v.push(i as PhotoId, &[a.cos(), a.sin()]);
    }
    v
}

fn all_pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).collect()
}

/// Groups of `v` (and `hashes`) under `rule` with every pair a candidate.
fn grouped(v: &Vectors, hashes: &[Option<DihedralHash>], rule: &DupRule) -> Vec<Vec<usize>> {
    let signals = Signals {
        vectors: v,
        hashes,
        keypoints: None,
    };
    let links = links(&signals, &[], all_pairs(v.len()), rule);
    group_links(&signals, &links, rule)
}

/// A hash whose first `differing` bits are set (agreement 1 − differing/256 with zero).
fn hash_with(differing: usize) -> Option<DihedralHash> {
    let mut bytes = [0u8; 32];
    for bit in 0..differing {
        bytes[bit / 8] |= 1 << (bit % 8);
    }
    Some(DihedralHash::new(&bytes))
}

/// A pseudo-random hash, unrelated to [`hash_with`]'s and to other seeds'.
fn random_hash(seed: u64) -> Option<DihedralHash> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let bytes: [u8; 32] = std::array::from_fn(|_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 56) as u8
    });
    Some(DihedralHash::new(&bytes))
}

#[test]
fn a_chain_of_neighbours_is_not_one_group() {
    // each step 0.3 rad: neighbours at cos 0.955, two steps apart at cos 0.825; at
    // threshold 0.9 (the first version's test) and 0.95 (just above it)
    let v = at_angles(&[0.0, 0.3, 0.6, 0.9, 1.2]);
    for threshold in [0.9, 0.95] {
        let groups = grouped(&v, &[], &DupRule::with_threshold(threshold));
        for g in &groups {
            assert!(g.len() <= 2, "chained group {g:?} at {threshold}");
        }
        // plain connected components would have put all five together
        assert!(!groups.is_empty());
    }
}

#[test]
fn tight_groups_form_and_far_photos_stay_alone() {
    let v = at_angles(&[0.0, 0.05, 0.1, 1.5, 1.52, 3.0]);
    let groups = grouped(&v, &[], &DupRule::with_threshold(0.95));
    assert_eq!(groups, vec![vec![0, 1, 2], vec![3, 4]]);
}

#[test]
fn exact_copies_group_even_without_candidates() {
    let v = at_angles(&[0.0, 0.0, 2.0]);
    let rule = DupRule::with_threshold(0.99);
    let signals = Signals {
        vectors: &v,
        hashes: &[],
        keypoints: None,
    };
    let links = links(&signals, &[vec![0, 1]], [], &rule);
    assert_eq!(links[0].evidence, Evidence::Exact);
    assert_eq!(group_links(&signals, &links, &rule), vec![vec![0, 1]]);
}

#[test]
fn graph_pairs_map_ids_to_rows() {
    let mut v = Vectors::new(2);
    v.push(40, &[1.0, 0.0]);
    v.push(10, &[0.999, 0.0447]);
    v.push(30, &[0.0, 1.0]);
    let knn = vec![
        (40, vec![(10, 0.999), (30, 0.0)]),
        (10, vec![(40, 0.999)]),
        (99, vec![]),
    ];
    let row: HashMap<PhotoId, usize> = v.ids().iter().enumerate().map(|(i, &id)| (id, i)).collect();
    assert_eq!(graph_pairs(&row, &knn), vec![(0, 1), (0, 2), (1, 0)]);
}

#[test]
fn matching_hashes_link_photos_the_vectors_keep_apart() {
    // rows 0 and 1 are 0.3 rad apart (cos 0.955 < 0.99) but hash alike
    let v = at_angles(&[0.0, 0.3, 2.0]);
    let hashes = [hash_with(0), hash_with(3), random_hash(1)];
    let off = DupRule::with_threshold(0.99);
    assert!(grouped(&v, &hashes, &off).is_empty());
    let on = off.with_hash_agreement(Some(0.95));
    assert_eq!(grouped(&v, &hashes, &on), vec![vec![0, 1]]);
    let strict = off.with_hash_agreement(Some(0.995));
    assert!(
        grouped(&v, &hashes, &strict).is_empty(),
        "3 bits exceed 0.995"
    );
}

#[test]
fn two_differently_edited_copies_meet_through_their_original() {
    // 0: the original; 1: a crop (close to the descriptor, hash far off);
    // 2: a grey copy (hash alike, descriptor far); 3: an unrelated photo
    let v = at_angles(&[0.0, 0.04, 0.3, 1.5]);
    let hashes = [hash_with(0), random_hash(1), hash_with(20), random_hash(2)];
    let rule = DupRule::with_threshold(0.99).with_hash_agreement(Some(0.68));
    let signals = Signals {
        vectors: &v,
        hashes: &hashes,
        keypoints: None,
    };
    let found = links(&signals, &[], all_pairs(4), &rule);
    let evidence: Vec<(usize, usize, Evidence)> =
        found.iter().map(|l| (l.a, l.b, l.evidence)).collect();
    assert_eq!(
        evidence,
        vec![(0, 1, Evidence::Descriptor), (0, 2, Evidence::Hash)],
        "the crop and the grey copy are not linked to each other"
    );
    assert_eq!(group_links(&signals, &found, &rule), vec![vec![0, 1, 2]]);
    let best = evidence_by_row(&[vec![0, 1, 2]], &found, 4);
    assert_eq!(best[2].map(|l| l.evidence), Some(Evidence::Hash));
    assert_eq!(best[1].map(|l| l.b), Some(1));
    assert_eq!(best[3], None, "the unrelated photo is in no group");
}

#[test]
fn weak_links_join_groups_only_in_pairs() {
    // {0, 1} and {2, 3} are tight pairs; one weak hash link 1–2 joins nothing, a second
    // weak link 0–3 joins them
    let v = at_angles(&[0.0, 0.01, 1.0, 1.01]);
    let rule = DupRule::with_threshold(0.999).with_hash_agreement(Some(0.7));
    let signals = Signals {
        vectors: &v,
        hashes: &[],
        keypoints: None,
    };
    let weak = |a, b| Link {
        a,
        b,
        evidence: Evidence::Hash,
        score: 0.72,
        confidence: 0.06,
        inliers: 0,
    };
    let strong = |a, b| Link {
        a,
        b,
        evidence: Evidence::Descriptor,
        score: 1.0,
        confidence: 1.0,
        inliers: 0,
    };
    let one = [strong(0, 1), strong(2, 3), weak(1, 2)];
    assert_eq!(
        group_links(&signals, &one, &rule),
        vec![vec![0, 1], vec![2, 3]]
    );
    let two = [strong(0, 1), strong(2, 3), weak(1, 2), weak(0, 3)];
    assert_eq!(group_links(&signals, &two, &rule), vec![vec![0, 1, 2, 3]]);
}

#[test]
fn hash_links_find_flipped_copies_among_all_pairs() {
    let mut bytes = [0u8; 32];
    bytes
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 91 + 7) as u8);
    let upright = DihedralHash::new(&bytes);
    let mirrored = DihedralHash::new(&upright.form(2));
    let other = DihedralHash::new(&[0x0f; 32]);
    let hashes = [Some(upright), None, Some(other), Some(mirrored)];
    assert_eq!(hash_links(&hashes, 0.95), vec![(0, 3)]);
}

fn sample_keypoints(name: &str) -> Keypoints {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/photos")
        .join(name);
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    crate::verify::keypoints_of(&img)
}

#[test]
fn verification_links_a_crop_and_a_mirror_and_the_descriptor_alone_links_nothing() {
    // rows: garden, its crop, ladybird, its mirror image, two unrelated photos; all at
    // cosine 0.999 to each other, hashes unrelated
    let keypoints: Vec<Keypoints> = [
        "garden.jpg",
        "edited/garden-cropped.jpg",
        "ladybird.jpg",
        "edited/ladybird-mirrored.jpg",
        "greenmeadow.jpg",
        "storm.jpg",
    ]
    .iter()
    .map(|n| sample_keypoints(n))
    .collect();
    let v = at_angles(&[0.0; 6]);
    let hashes: Vec<_> = (0..6).map(random_hash).collect();
    let keypoints: Vec<std::sync::Arc<Keypoints>> =
        keypoints.into_iter().map(std::sync::Arc::new).collect();
    let lookup = |row: usize| keypoints.get(row).cloned();
    let signals = Signals {
        vectors: &v,
        hashes: &hashes,
        keypoints: Some(&lookup),
    };
    let rule = DupRule::with_threshold(0.99)
        .with_hash_agreement(Some(DEFAULT_HASH_AGREEMENT))
        .with_verification(Some(DEFAULT_MIN_INLIERS));
    let found = links(&signals, &[], all_pairs(6), &rule);
    let pairs: Vec<(usize, usize)> = found.iter().map(|l| (l.a, l.b)).collect();
    assert_eq!(pairs.len(), 2, "{found:?}");
    assert!(
        pairs.contains(&(0, 1)) && pairs.contains(&(2, 3)),
        "{pairs:?}"
    );
    for l in &found {
        assert_eq!(l.evidence, Evidence::Verified);
        assert!(
            l.inliers >= DEFAULT_MIN_INLIERS && l.confidence > 0.0,
            "{l:?}"
        );
    }
    assert_eq!(
        group_links(&signals, &found, &rule),
        vec![vec![0, 1], vec![2, 3]]
    );
    // without verification the same descriptors put all six together
    let unverified = DupRule::with_threshold(0.99);
    let plain = Signals {
        keypoints: None,
        ..signals
    };
    let all = links(&plain, &[], all_pairs(6), &unverified);
    assert_eq!(
        group_links(&plain, &all, &unverified),
        vec![vec![0, 1, 2, 3, 4, 5]]
    );
}

#[test]
fn region_neighbours_join_each_photos_list_once() {
    let mut graph: dino_curate_index::KnnGraph =
        vec![(1, vec![(2, 0.9)]), (3, vec![(1, 0.8)]), (5, vec![])];
    let regions = vec![
        (0, vec![(9, 0.5)]),
        (1, vec![(2, 0.7), (4, 0.6)]),
        (5, vec![(3, 0.4)]),
        (7, vec![(1, 0.3)]),
    ];
    add_neighbours(&mut graph, regions);
    assert_eq!(
        graph,
        vec![
            (1, vec![(2, 0.9), (4, 0.6)]),
            (3, vec![(1, 0.8)]),
            (5, vec![(3, 0.4)]),
        ]
    );
}
