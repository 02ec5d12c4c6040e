//! Stress harness for the store's write path (issue 24): many runs of `index`'s write pattern
//! (`Store::put` and `put_keypoints` per photo, then `sync_ann` and `flush`), each in a child
//! process with a fresh store, several at a time so that the runs contend for the CPU. A run
//! that outlives `--timeout` counts as a hang: the harness prints every thread's stack (gdb,
//! else eu-stack), kills it and goes on. After each run that finished, the harness reopens its
//! store and checks that every record, vector and keypoint blob is there.
//!
//! cargo run --release -p dino-curate-index --example store_stress -- \
//!     [--runs 500] [--parallel 4] [--records 20000] [--keypoint-bytes 10800]
//!     [--ef-construction 200] [--timeout 300] [--stacks DIR]
//!
//! `--keypoint-bytes 0` writes no keypoints: the pattern of `index/tests/recall.rs`, whose
//! small records leave the meta tree's rewrites a large share of the log, so that sled frees
//! segments at the end of the file and truncates it (the deadlock needs a truncation; with
//! 10.8 kB of fresh keypoints per photo the file only grows and none happened in 222 runs).
//! `--rounds 2` indexes the records again under a second model, as after a model change:
//! the store drops every vector, then `put` writes them all again. `--working-set N` spreads
//! the puts over N paths only (each photo re-embedded records/N times, as by repeated
//! `index` runs over an edited library): the log is then mostly garbage and sled cleans and
//! frees its segments, truncating the file when the last ones are free.
//!
//! `--ef-construction` (the graph's, default the store's 200) makes `sync_ann` cheaper, so
//! that more runs of the write loop fit in an hour; the writes are the same.
//!
//! Prints one line per run and a summary line (`runs … hangs … missing …`); exits 1 when a
//! run hung, failed or lost records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dino_curate_index::{AnnParams, PhotoRecord, SearchOptions, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

const DIM: usize = 384;
/// About the size of one photo's verification keypoints (300 corners with descriptors).
const KEYPOINT_BYTES: usize = 10_800;

/// What each run writes.
#[derive(Debug, Clone, Copy)]
struct Pattern {
    records: usize,
    working_set: usize,
    rounds: usize,
    keypoint_bytes: usize,
    ef_construction: usize,
}

type R<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Clone)]
struct Options {
    runs: usize,
    parallel: usize,
    pattern: Pattern,
    timeout: Duration,
    stacks: Option<PathBuf>,
}

fn value<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> R<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value").into()),
    }
}

impl Pattern {
    /// Distinct paths written: the working set, or every record.
    fn paths(&self) -> usize {
        match self.working_set {
            0 => self.records,
            n => n.min(self.records),
        }
    }
}

fn pattern(args: &[String]) -> R<Pattern> {
    Ok(Pattern {
        records: value(args, "--records", 20_000)?,
        rounds: value(args, "--rounds", 1)?,
        working_set: value(args, "--working-set", 0)?,
        keypoint_bytes: value(args, "--keypoint-bytes", KEYPOINT_BYTES)?,
        ef_construction: value(
            args,
            "--ef-construction",
            AnnParams::default().ef_construction,
        )?,
    })
}

fn parse(args: &[String]) -> R<Options> {
    Ok(Options {
        runs: value(args, "--runs", 500)?,
        parallel: value(args, "--parallel", 4)?,
        pattern: pattern(args)?,
        timeout: Duration::from_secs(value(args, "--timeout", 300)?),
        stacks: value(args, "--stacks", String::new())
            .map(|s| (!s.is_empty()).then(|| PathBuf::from(s)))?,
    })
}

fn record(i: usize) -> PhotoRecord {
    let mut blake3 = [0u8; 32];
    blake3[..8].copy_from_slice(&(i as u64).to_le_bytes());
    blake3[31] = 0x5a;
    PhotoRecord {
        path: PathBuf::from(format!("/photos/{:03}/IMG_{i:06}.jpg", i % 500)),
        size: 3_000_000 + i as u64,
        mtime_ns: 1_700_000_000_000_000_000 + i as i128,
        blake3,
        width: 4000,
        height: 3000,
        taken_at: Some(format!("2024-05-01T10:{:02}:{:02}", (i / 60) % 60, i % 60)),
        stats: None,
        perceptual_hash: Some([i as u8; 32]),
        padding: None,
    }
}

fn unit_vector(rng: &mut StdRng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| StandardNormal.sample(rng)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// The child: `index`'s writes for `records` photos into a fresh store at `dir`.
fn write_store(dir: &Path, p: Pattern, seed: u64) -> R<()> {
    let start = Instant::now();
    let mut store = Store::open(dir)?;
    store.set_options(SearchOptions {
        params: AnnParams {
            ef_construction: p.ef_construction,
            ..AnnParams::default()
        },
        ..store.options()
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut keypoints = vec![0u8; p.keypoint_bytes];
    let mut put_s = 0.0;
    for round in 0..p.rounds.max(1) {
        store.set_model(&format!("stress model {round}"), DIM)?;
        let puts = Instant::now();
        for i in 0..p.records {
            let rec = record(i % p.paths());
            store.put(&rec, &unit_vector(&mut rng))?;
            if !keypoints.is_empty() {
                rng.fill(&mut keypoints[..]);
                store.put_keypoints(&rec.blake3, &keypoints)?;
            }
        }
        put_s += puts.elapsed().as_secs_f64();
        store.sync_ann()?;
    }
    store.flush()?;
    let puts = p.records * p.rounds.max(1);
    println!(
        "child: {puts} puts in {put_s:.2} s ({:.0}/s), all in {:.2} s",
        puts as f64 / put_s,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What is missing from the store at `dir` after a finished run of `records` photos.
fn missing_records(dir: &Path, p: Pattern) -> R<usize> {
    let records = p.paths();
    let store = Store::open(dir)?;
    let mut missing = 0;
    for i in 0..records {
        let rec = record(i);
        let found = match store.get_by_path(&rec.path)? {
            Some((id, got)) => {
                got == rec
                    && store.embedding(id)?.is_some()
                    && (p.keypoint_bytes == 0 || store.has_keypoints(&rec.blake3)?)
            }
            None => false,
        };
        missing += usize::from(!found);
    }
    let meta = store.meta()?;
    if meta.photos != records || meta.embeddings != records {
        missing = missing.max(records.abs_diff(meta.photos.min(meta.embeddings)));
    }
    Ok(missing)
}

/// Every thread's stack of process `pid`, from gdb or eu-stack.
fn thread_stacks(pid: u32) -> String {
    let pid = pid.to_string();
    let gdb = Command::new("gdb")
        .args(["-p", &pid, "-batch", "-nx", "-ex", "set pagination off"])
        .args(["-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = gdb {
        if out.status.success() && !out.stdout.is_empty() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }
    match Command::new("eu-stack").args(["-p", &pid]).output() {
        Ok(out) if !out.stdout.is_empty() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => "(neither gdb nor eu-stack could read the stacks)".to_string(),
    }
}

struct Running {
    run: usize,
    child: Child,
    dir: tempfile::TempDir,
    started: Instant,
}

#[derive(Debug, Default)]
struct Tally {
    finished: usize,
    hangs: usize,
    failures: usize,
    missing: usize,
    seconds: Vec<f64>,
}

fn spawn(run: usize, opts: &Options) -> R<Running> {
    let dir = tempfile::tempdir()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["--child", &dir.path().to_string_lossy()])
        .args(["--records", &opts.pattern.records.to_string()])
        .args(["--rounds", &opts.pattern.rounds.to_string()])
        .args(["--working-set", &opts.pattern.working_set.to_string()])
        .args(["--keypoint-bytes", &opts.pattern.keypoint_bytes.to_string()])
        .args([
            "--ef-construction",
            &opts.pattern.ef_construction.to_string(),
        ])
        .args(["--seed", &run.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Running {
        run,
        child,
        dir,
        started: Instant::now(),
    })
}

/// Handles a run that outlived the timeout: its stacks, then SIGKILL.
fn report_hang(r: &mut Running, opts: &Options) -> R<()> {
    let stacks = thread_stacks(r.child.id());
    println!(
        "run {}: HUNG (no exit after {:.0} s); thread stacks:",
        r.run,
        r.started.elapsed().as_secs_f64()
    );
    println!("{stacks}");
    if let Some(dir) = &opts.stacks {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("hang-run{}.txt", r.run)), &stacks)?;
    }
    r.child.kill()?;
    r.child.wait()?;
    Ok(())
}

/// Polls `r`: true once it is over (finished, failed or hung), with the tally updated.
fn poll(r: &mut Running, opts: &Options, tally: &mut Tally) -> R<bool> {
    match r.child.try_wait()? {
        Some(status) => {
            let secs = r.started.elapsed().as_secs_f64();
            if status.success() {
                let missing = missing_records(r.dir.path(), opts.pattern)?;
                tally.finished += 1;
                tally.missing += missing;
                tally.seconds.push(secs);
                println!("run {}: {secs:.1} s, {missing} records missing", r.run);
            } else {
                tally.failures += 1;
                println!("run {}: FAILED ({status}) after {secs:.1} s", r.run);
            }
            Ok(true)
        }
        None if r.started.elapsed() > opts.timeout => {
            report_hang(r, opts)?;
            tally.hangs += 1;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn harness(opts: &Options) -> R<Tally> {
    let mut tally = Tally::default();
    let mut running: Vec<Running> = Vec::new();
    let mut next = 0;
    while next < opts.runs || !running.is_empty() {
        while next < opts.runs && running.len() < opts.parallel {
            running.push(spawn(next, opts)?);
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut still = Vec::with_capacity(running.len());
        for mut r in running {
            if !poll(&mut r, opts, &mut tally)? {
                still.push(r);
            }
        }
        running = still;
    }
    Ok(tally)
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(dir) = value(&args, "--child", String::new())
        .ok()
        .filter(|d| !d.is_empty())
    {
        return write_store(Path::new(&dir), pattern(&args)?, value(&args, "--seed", 0)?);
    }
    let opts = parse(&args)?;
    println!(
        "store_stress: {} runs of {} rounds of {} records over {} paths ({} keypoint bytes \
         each, graph ef_construction {}), {} at a time on {} CPUs, timeout {} s",
        opts.runs,
        opts.pattern.rounds,
        opts.pattern.records,
        opts.pattern.paths(),
        opts.pattern.keypoint_bytes,
        opts.pattern.ef_construction,
        opts.parallel,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.timeout.as_secs()
    );
    let t = harness(&opts)?;
    let mut secs = t.seconds.clone();
    secs.sort_by(f64::total_cmp);
    let median = secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "summary: runs {} finished {} hangs {} failed {} missing {} median {median:.1} s \
         (hang rate {:.4})",
        opts.runs,
        t.finished,
        t.hangs,
        t.failures,
        t.missing,
        t.hangs as f64 / opts.runs.max(1) as f64
    );
    if t.hangs + t.failures + t.missing > 0 {
        std::process::exit(1);
    }
    Ok(())
}
