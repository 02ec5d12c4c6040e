//! The released models: download from a real HTTP server started here (serving a full-size
//! ViT-S/16 in the official `.pth` format), resume, failures, the cache without a network,
//! and `index` with no `train`, online through a mirror and offline.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::dino_with_models as dino;
use common::mirror::{Behaviour, Mirror};
use dino_curate::download::DownloadError;
use dino_curate::released::{self, CacheState, ModelCache, ModelError, DEFAULT_MODEL};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const FILE: &str = "dino_deitsmall16_pretrain.pth";

/// The fixture, made once per test binary (86.7 MB, like the official file).
fn fixture() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| common::vits16_pth_bytes().expect("the fixture can be written"))
}

fn vits16() -> &'static released::ReleasedModel {
    released::find(DEFAULT_MODEL).expect("the default is a released model")
}

fn cache_for(dir: &Path, mirror: &Mirror) -> ModelCache {
    ModelCache::new(dir.to_path_buf(), mirror.base())
}

/// Files in the cache folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn free_port() -> TestResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn a_fresh_download_is_verified_recorded_and_then_used_without_a_server() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = {
        let mirror = Mirror::start(FILE, fixture().to_vec())?;
        let mut last = (0, None);
        let path = cache_for(dir.path(), &mirror).ensure(vits16(), &mut |d, t| last = (d, t))?;
        assert_eq!(last, (fixture().len() as u64, Some(fixture().len() as u64)));
        let seen = mirror.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            seen[0].path,
            format!("/dino/dino_deitsmall16_pretrain/{FILE}")
        );
        path
    };
    assert_eq!(std::fs::read(&path)?, fixture());
    assert_eq!(
        listing(dir.path()),
        vec![FILE.to_owned(), format!("{FILE}.json")]
    );
    let CacheState::Present(Some(record)) =
        ModelCache::new(dir.path().to_path_buf(), "unused".into()).state(vits16())
    else {
        panic!("the file and its record are there");
    };
    assert_eq!(record.size, fixture().len() as u64);
    assert_eq!(record.sha256, released::sha256_hex(&path)?);
    // The server is gone: the cached file is used, nothing is fetched.
    let offline = ModelCache::new(
        dir.path().to_path_buf(),
        format!("http://127.0.0.1:{}/", free_port()?),
    );
    let again = offline.ensure(vits16(), &mut |_, _| panic!("no download expected"))?;
    assert_eq!(again, path);
    Ok(())
}

#[test]
fn an_interrupted_download_keeps_its_part_and_resumes_with_a_range() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mirror = Mirror::start(FILE, fixture().to_vec())?;
    let cache = cache_for(dir.path(), &mirror);
    let cut = 40_000_000;
    mirror.set(Behaviour::CutAfter(cut));
    let err = cache
        .ensure(vits16(), &mut |_, _| {})
        .expect_err("cut short");
    assert!(
        matches!(
            err,
            ModelError::Download {
                source: DownloadError::Interrupted { received, .. },
                ..
            } if received == cut as u64
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("resumes"), "{message}");
    assert_eq!(listing(dir.path()), vec![format!("{FILE}.part")]);
    assert_eq!(cache.state(vits16()), CacheState::Partial(cut as u64));

    mirror.set(Behaviour::Serve);
    let path = cache.ensure(vits16(), &mut |_, _| {})?;
    assert_eq!(
        mirror.requests().last().and_then(|s| s.range_from),
        Some(cut)
    );
    assert_eq!(std::fs::read(path)?, fixture());
    Ok(())
}

#[test]
fn a_server_that_ignores_ranges_means_starting_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mirror = Mirror::start(FILE, fixture().to_vec())?;
    let cache = cache_for(dir.path(), &mirror);
    mirror.set(Behaviour::CutAfter(10_000_000));
    assert!(cache.ensure(vits16(), &mut |_, _| {}).is_err());
    mirror.set(Behaviour::IgnoreRange);
    let path = cache.ensure(vits16(), &mut |_, _| {})?;
    assert_eq!(
        mirror.requests().last().and_then(|s| s.range_from),
        Some(10_000_000)
    );
    assert_eq!(std::fs::read(path)?, fixture());
    Ok(())
}

#[test]
fn a_404_says_where_to_put_the_file_and_leaves_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mirror = Mirror::start(FILE, fixture().to_vec())?;
    mirror.set(Behaviour::NotFound);
    let cache = cache_for(dir.path(), &mirror);
    let err = cache.ensure(vits16(), &mut |_, _| {}).expect_err("404");
    assert!(
        matches!(
            err,
            ModelError::Download {
                source: DownloadError::Status { status: 404, .. },
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    for needle in [
        cache.url(vits16()),
        cache.path(vits16()).display().to_string(),
        "--weights FILE".to_owned(),
    ] {
        assert!(message.contains(&needle), "{needle} not in: {message}");
    }
    assert!(listing(dir.path()).is_empty());
    Ok(())
}

/// A complete answer whose content is not the backbone: nothing stays in the cache.
fn rejected(body: Vec<u8>) -> TestResult {
    let dir = tempfile::tempdir()?;
    let mirror = Mirror::start(FILE, body)?;
    let cache = cache_for(dir.path(), &mirror);
    let err = cache
        .ensure(vits16(), &mut |_, _| {})
        .expect_err("not a backbone");
    assert!(matches!(err, ModelError::Invalid { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("not kept") && message.contains("--weights FILE"),
        "{message}"
    );
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
    Ok(())
}

#[test]
fn a_truncated_file_fails_verification_and_leaves_nothing() -> TestResult {
    rejected(fixture()[..fixture().len() / 2].to_vec())
}

#[test]
fn garbage_fails_verification_and_leaves_nothing() -> TestResult {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let garbage = (0..fixture().len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    rejected(garbage)
}

#[test]
fn no_server_is_offline_not_a_failure() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cache = ModelCache::new(
        dir.path().to_path_buf(),
        format!("http://127.0.0.1:{}/dino/", free_port()?),
    );
    let err = cache
        .ensure(vits16(), &mut |_, _| {})
        .expect_err("no server");
    assert!(matches!(err, ModelError::Offline { .. }), "{err:?}");
    assert!(listing(dir.path()).is_empty());
    Ok(())
}

#[test]
fn a_cached_file_that_changed_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mirror = Mirror::start(FILE, fixture().to_vec())?;
    let cache = cache_for(dir.path(), &mirror);
    let path = cache.ensure(vits16(), &mut |_, _| {})?;
    let mut bytes = std::fs::read(&path)?;
    let last = bytes.len() - 100;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes)?;
    let err = cache.cached(vits16()).expect_err("changed");
    assert!(matches!(err, ModelError::Changed { .. }), "{err:?}");
    Ok(())
}

#[test]
fn a_file_placed_by_hand_is_verified_and_recorded() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(FILE), fixture())?;
    let cache = ModelCache::new(dir.path().to_path_buf(), "http://127.0.0.1:9/".into());
    assert!(cache.cached(vits16())?.is_some());
    let CacheState::Present(Some(record)) = cache.state(vits16()) else {
        panic!("recorded");
    };
    assert_eq!(record.source, "placed by hand");
    Ok(())
}

#[test]
fn index_needs_no_train_and_a_second_run_needs_no_network() -> TestResult {
    let dir = tempfile::tempdir()?;
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos)?;
    for i in 0..6 {
        common::picture(i).save(photos.join(format!("p{i}.png")))?;
    }
    let (ws, cache) = (dir.path().join("ws"), dir.path().join("cache"));
    let photos_arg = photos.to_str().ok_or("path")?;
    {
        let mirror = Mirror::start(FILE, fixture().to_vec())?;
        let (ok, out, err) = dino(
            &ws,
            &cache,
            &mirror.base(),
            &["index", photos_arg, "--json"],
        )?;
        assert!(ok, "{err}");
        assert!(err.contains("dino-vits16 at 224 px"), "{err}");
        let summary: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(summary["embedded"], 6, "{out}");
        assert_eq!(mirror.requests().len(), 1);
    }
    let dead = format!("http://127.0.0.1:{}/dino/", free_port()?);
    let (ok, out, err) = dino(&ws, &cache, &dead, &["index", "--json"])?;
    assert!(ok, "{err}");
    assert!(!err.contains("no network"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(summary["unchanged"], 6, "{out}");
    let query = photos.join("p0.png");
    let query = query.to_str().ok_or("path")?;
    for args in [
        vec!["search", query, "-k", "3", "--json"],
        vec!["dups", "--json"],
        vec!["clusters", "-k", "2", "--json"],
        vec!["outliers", "-n", "2", "--json"],
        vec!["select", "3", "--json"],
        vec!["models", "--json"],
    ] {
        let (ok, out, err) = dino(&ws, &cache, &dead, &args)?;
        assert!(ok, "{args:?}: {err}");
        assert!(!err.contains("not semantic"), "{args:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out)
            .map_err(|e| format!("{args:?} printed no JSON ({e}): {out}"))?;
    }
    // `eval` names the released model too, from the cache.
    let labelled = dir.path().join("labelled");
    for (split, class, i) in [
        ("train", "a", 0),
        ("train", "b", 1),
        ("test", "a", 2),
        ("test", "b", 3),
    ] {
        std::fs::create_dir_all(labelled.join(split).join(class))?;
        common::picture(i).save(labelled.join(split).join(class).join(format!("{i}.png")))?;
    }
    let labelled_arg = labelled.to_str().ok_or("path")?;
    let (ok, out, err) = dino(
        &ws,
        &cache,
        &dead,
        &[
            "eval",
            "knn",
            labelled_arg,
            "--model",
            "dino-vits16",
            "--json",
        ],
    )?;
    assert!(ok, "{err}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&out)?["top1"].is_number(),
        "{out}"
    );
    let (_, out, _) = dino(&ws, &cache, &dead, &["models", "--json"])?;
    let models: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(models[0]["name"], "dino-vits16");
    assert_eq!(models[0]["cached"], "yes");
    assert_eq!(models[0]["bytes"], fixture().len() as u64);
    Ok(())
}

#[test]
fn offline_index_of_the_samples_still_finds_their_copies() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ws, cache) = (dir.path().join("ws"), dir.path().join("cache"));
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/photos");
    let dead = format!("http://127.0.0.1:{}/dino/", free_port()?);
    let (ok, _, err) = dino(
        &ws,
        &cache,
        &dead,
        &["index", samples.to_str().ok_or("path")?],
    )?;
    assert!(ok, "{err}");
    let no_network: Vec<&str> = err.lines().filter(|l| l.contains("no network")).collect();
    assert_eq!(no_network.len(), 1, "{err}");
    let (ok, out, err) = dino(&ws, &cache, &dead, &["dups", "--json"])?;
    assert!(ok, "{err}");
    let groups: serde_json::Value = serde_json::from_str(&out)?;
    let edited = std::fs::read_dir(samples.join("edited"))?.count();
    let grouped: usize = groups
        .as_array()
        .ok_or("a list of groups")?
        .iter()
        .flat_map(|g| {
            let members = g["members"].as_array().cloned().unwrap_or_default();
            let mut paths: Vec<String> = members
                .iter()
                .filter_map(|m| m["path"].as_str().map(str::to_owned))
                .collect();
            paths.extend(g["keep"].as_str().map(str::to_owned));
            paths
        })
        .filter(|p| p.contains("/edited/"))
        .count();
    assert_eq!(grouped, edited, "{out}");
    let (ok, _, err) = dino(&ws, &cache, &dead, &["clusters", "-k", "3"])?;
    assert!(ok && err.contains("not semantic"), "{err}");
    Ok(())
}

/// Six small photos in `dir/photos`.
fn small_photos(dir: &Path) -> TestResult<std::path::PathBuf> {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos)?;
    for i in 0..6 {
        common::picture(i).save(photos.join(format!("p{i}.png")))?;
    }
    Ok(photos)
}

const QUICK_TRAIN: [&str; 9] = [
    "--max-steps",
    "2",
    "--batch-size",
    "4",
    "--global-size",
    "32",
    "--local-size",
    "16",
    "--json",
];

#[test]
fn train_adapts_the_released_model_and_index_follows_the_verdict() -> TestResult {
    let dir = tempfile::tempdir()?;
    let photos = small_photos(dir.path())?;
    let (ws, cache) = (dir.path().join("ws"), dir.path().join("cache"));
    let mirror = Mirror::start(FILE, fixture().to_vec())?;
    let mut args = vec!["train", photos.to_str().ok_or("path")?];
    args.extend(QUICK_TRAIN);
    let (ok, out, err) = dino(&ws, &cache, &mirror.base(), &args)?;
    assert!(ok, "{err}");
    assert!(err.contains("adapting dino-vits16 to your photos"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(summary["adapted_from"], "dino-vits16", "{out}");
    let better = summary["signal"]["better"].as_bool().ok_or("a verdict")?;
    assert!(
        summary["signal"]["rank_me_start"].as_f64().is_some(),
        "{out}"
    );
    let config = std::fs::read_to_string(ws.join("config.toml"))?;
    if better {
        assert!(err.contains("uses it from now on"), "{err}");
        assert!(config.contains("kind = \"trained\""), "{config}");
    } else {
        assert!(err.contains("keeps dino-vits16"), "{err}");
        assert!(!config.contains("kind = \"trained\""), "{config}");
    }
    let (_, _, err) = dino(
        &ws,
        &cache,
        &mirror.base(),
        &["train", "x", "--arch", "vit-tiny"],
    )?;
    assert!(err.contains("--from-scratch"), "{err}");
    Ok(())
}

#[test]
fn train_without_a_network_or_a_model_trains_from_scratch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let photos = small_photos(dir.path())?;
    let (ws, cache) = (dir.path().join("ws"), dir.path().join("cache"));
    let dead = format!("http://127.0.0.1:{}/dino/", free_port()?);
    let mut args = vec!["train", photos.to_str().ok_or("path")?];
    args.extend(QUICK_TRAIN);
    let (ok, out, err) = dino(&ws, &cache, &dead, &args)?;
    assert!(ok, "{err}");
    let fallback: Vec<&str> = err.lines().filter(|l| l.contains("no network")).collect();
    assert_eq!(fallback.len(), 1, "{err}");
    assert!(
        fallback[0].contains("training from scratch instead"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_str(&out)?;
    assert!(summary["adapted_from"].is_null(), "{out}");
    Ok(())
}

#[test]
fn a_tls_failure_is_an_error_not_offline() -> TestResult {
    // A plain-HTTP server behind an https:// address: the TLS handshake fails on its answer,
    // as it does on a proxy's certificate that no trusted authority signed.
    let dir = tempfile::tempdir()?;
    let mirror = Mirror::start(FILE, fixture().to_vec())?;
    mirror.set(Behaviour::PlainHttpAtOnce);
    let cache = ModelCache::new(
        dir.path().to_path_buf(),
        format!("https://127.0.0.1:{}/dino/", mirror.port),
    );
    let err = cache
        .ensure(vits16(), &mut |_, _| {})
        .expect_err("no TLS there");
    assert!(
        matches!(
            err,
            ModelError::Download {
                source: DownloadError::Tls { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--weights FILE"), "{err}");
    assert!(listing(dir.path()).is_empty());
    Ok(())
}
