//! The watchdog on a real hang: a child process whose main thread deadlocks on two mutexes
//! taken in opposite orders (as sled's writer and IO threads did, issue 24) must end by
//! itself, non-zero, with one line saying what it was doing.

use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use dino_curate::watchdog::{StallPolicy, Watchdog, EXIT_STALLED};

const ENV: &str = "DINO_CURATE_WATCHDOG_CHILD";

/// Two threads, each holding one lock and waiting for the other's.
fn deadlock() {
    let (a, b) = (Arc::new(Mutex::new(())), Arc::new(Mutex::new(())));
    let both = Arc::new(Barrier::new(2));
    let (a2, b2, both2) = (a.clone(), b.clone(), both.clone());
    let other = std::thread::spawn(move || {
        let _b = b2.lock();
        both2.wait();
        let _a = a2.lock();
    });
    let _a = a.lock();
    both.wait();
    let _b = b.lock();
    let _ = other.join();
}

/// Not a test on its own: the child that the test below runs.
#[test]
fn watchdog_child_that_deadlocks() {
    if std::env::var_os(ENV).is_none() {
        return;
    }
    let policy = StallPolicy {
        floor: Duration::from_millis(1500),
        poll: Duration::from_millis(100),
        ..StallPolicy::default()
    };
    let dog = Watchdog::start("stresstest", policy).expect("a watchdog thread");
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(20));
        dog.beat(format!("writing record {i}"));
    }
    deadlock();
    unreachable!("the deadlock ended");
}

#[test]
fn a_deadlocked_process_ends_itself_saying_what_it_did() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(["watchdog_child_that_deadlocks", "--exact", "--nocapture"])
        .env(ENV, "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_STALLED), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(60));
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("dino-curate stresstest"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("no progress") && lines[0].contains("while writing record 4"),
        "{}",
        lines[0]
    );
    Ok(())
}
