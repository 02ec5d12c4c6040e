//! End to end: the real `dino-curate tui` inside tmux on a small indexed folder. Keys go
//! in with `send-keys`, the screen comes back with `capture-pane -p`; marking a duplicate,
//! trashing it (with the confirmation) and undoing must round-trip the real file; `v`
//! draws a cluster's attention map with the indexed model and writes its PNG.
//!
//! Skipped, with a message, when tmux is missing, unless `DINO_CURATE_REQUIRE_TMUX=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::picture;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_dino-curate");

/// Six photos and an exact copy of the first, indexed with a tiny random model.
fn indexed_folder(dir: &Path) -> TestResult<(PathBuf, PathBuf)> {
    let (ws, photos) = (dir.join("ws"), dir.join("photos"));
    std::fs::create_dir_all(photos.join("copies"))?;
    for i in 0..6 {
        picture(i).save(photos.join(format!("p{i}.png")))?;
    }
    std::fs::copy(photos.join("p0.png"), photos.join("copies/p0-copy.png"))?;
    let weights = common::tiny_weights(dir)?;
    let out = Command::new(BIN)
        .arg("--workspace")
        .arg(&ws)
        .arg("index")
        .arg(&photos)
        .arg("--weights")
        .arg(&weights)
        .args(["--size", "32", "--device", "cpu"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((ws, photos))
}

/// A tmux server of its own (private socket), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> TestResult<Output> {
        Ok(Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()?)
    }

    fn keys(&self, keys: &[&str]) -> TestResult {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend(keys);
        let out = self.run(&args)?;
        assert!(out.status.success(), "send-keys {keys:?}");
        Ok(())
    }

    fn screen(&self) -> TestResult<String> {
        let out = self.run(&["capture-pane", "-p", "-t", "tui"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the screen shows `text`; fails with the last screen after a minute.
    fn wait_for(&self, text: &str) -> TestResult<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen()?;
            if screen.contains(text) {
                return Ok(screen);
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("no {text:?} on the screen:\n{screen}").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn tmux_available() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var("DINO_CURATE_REQUIRE_TMUX").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "tmux is required (DINO_CURATE_REQUIRE_TMUX=1) but not found"
        );
        eprintln!("skipped: tmux is not installed (CI sets DINO_CURATE_REQUIRE_TMUX=1)");
    }
    found
}

/// Which of the two copies is gone, if exactly one is.
fn missing(copies: &[PathBuf; 2]) -> Option<&PathBuf> {
    match copies.iter().filter(|p| !p.exists()).collect::<Vec<_>>()[..] {
        [one] => Some(one),
        _ => None,
    }
}

#[test]
fn mark_trash_and_undo_a_duplicate_in_tmux() -> TestResult {
    if !tmux_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (ws, photos) = indexed_folder(dir.path())?;
    let copies = [photos.join("p0.png"), photos.join("copies/p0-copy.png")];
    let original = std::fs::read(&copies[0])?;
    let tmux = Tmux {
        socket: dir.path().join("tmux.sock"),
    };
    let command = format!(
        "{BIN} --workspace '{}' tui --threshold 0.99999",
        ws.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "150",
        "-y",
        "40",
        &command,
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tmux.wait_for("duplicate groups")?;

    tmux.keys(&["2"])?;
    tmux.wait_for("1 groups, 2 photos")?;
    tmux.keys(&["j", "Space"])?;
    tmux.wait_for("1 marked")?;
    tmux.keys(&["t"])?;
    tmux.wait_for("Move 1 photo to the workspace trash?")?;
    tmux.keys(&["y"])?;
    tmux.wait_for("moved 1 photo to the trash")?;
    let gone = missing(&copies)
        .ok_or("not exactly one copy moved")?
        .clone();
    let in_trash: Vec<PathBuf> = walk(&ws.join("trash"))
        .into_iter()
        .filter(|p| p.file_name() == gone.file_name())
        .collect();
    assert_eq!(in_trash.len(), 1, "{in_trash:?}");
    assert_eq!(std::fs::read(&in_trash[0])?, original);

    tmux.keys(&["u"])?;
    tmux.wait_for("restored 1 photo")?;
    assert_eq!(std::fs::read(&gone)?, original, "put back byte for byte");
    assert!(!in_trash[0].exists());

    tmux.keys(&["1", "v"])?;
    tmux.wait_for("attention map ready")?;
    let maps = walk(&ws.join("attention"));
    assert_eq!(maps.len(), 1, "{maps:?}");
    assert!(image::open(&maps[0])?.width() > 0);
    tmux.keys(&["v"])?;

    tmux.keys(&["?"])?;
    tmux.wait_for("Keys (Esc closes)")?;
    tmux.keys(&["Escape", "q"])?;
    let start = Instant::now();
    while tmux.run(&["has-session", "-t", "tui"])?.status.success() {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}
