//! A hang is never silent (issue 24). `index` and `train` beat a [`Watchdog`] at every unit
//! of progress (a batch of photos, a training step, a stage). When the beats stop for far
//! longer than the run's steps have taken, and the process has used no CPU meanwhile (a
//! deadlock, or a disk that stopped answering, not a long computation), the watchdog says so
//! in one line, naming what the run was doing, and ends the process at once with
//! [`EXIT_STALLED`]. Nothing is flushed or dropped on the way out: the index and the
//! checkpoints are left exactly as a kill -9 would leave them, which they survive.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpu_time::ProcessTime;

/// Exit status of a process the watchdog stopped (EX_TEMPFAIL: running it again is the fix).
pub const EXIT_STALLED: i32 = 75;

/// Environment variable overriding [`StallPolicy::floor`], in seconds (e.g. for a library on
/// a network share that can pause for minutes).
pub const STALL_SECS_ENV: &str = "DINO_CURATE_STALL_SECS";

/// When silence counts as a hang.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallPolicy {
    /// Never a hang before this much silence.
    pub floor: Duration,
    /// A hang once the silence exceeds this many times the longest gap between beats seen.
    pub step_factor: u32,
    /// A poll interval counts as idle when the process used less than this fraction of one
    /// CPU during it.
    pub idle_cpu: f64,
    /// How often the watchdog looks.
    pub poll: Duration,
}

impl Default for StallPolicy {
    fn default() -> Self {
        StallPolicy {
            floor: Duration::from_secs(300),
            step_factor: 50,
            idle_cpu: 0.05,
            poll: Duration::from_secs(1),
        }
    }
}

impl StallPolicy {
    /// The default policy with the floor taken from [`STALL_SECS_ENV`] when it is set to a
    /// positive number of seconds.
    pub fn from_env() -> Self {
        let floor = std::env::var(STALL_SECS_ENV)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64);
        StallPolicy {
            floor: floor.unwrap_or(StallPolicy::default().floor),
            ..StallPolicy::default()
        }
    }

    /// The silence allowed after beats at most `longest_step` apart.
    pub fn limit(&self, longest_step: Duration) -> Duration {
        self.floor.max(longest_step * self.step_factor)
    }
}

/// What the watchdog saw when it gave up.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    /// The command (`index`, `train`).
    pub task: &'static str,
    /// What the run was doing when the beats stopped.
    pub doing: String,
    /// Time since the last beat.
    pub silent_for: Duration,
    /// The longest gap between two beats before that.
    pub longest_step: Duration,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dino-curate {}: no progress and no CPU used for {:.0} s (its steps took at most \
             {:.1} s) while {}: stopped as hung (exit {EXIT_STALLED}); its files are as a \
             kill -9 leaves them, which they survive: run it again ({STALL_SECS_ENV} sets \
             how long to wait)",
            self.task,
            self.silent_for.as_secs_f64(),
            self.longest_step.as_secs_f64(),
            self.doing,
        )
    }
}

#[derive(Debug)]
struct State {
    doing: String,
    last_beat: Instant,
    longest_step: Duration,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Watches a run's progress from a thread of its own; stops watching when dropped.
#[derive(Debug)]
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Called once when a hang is seen.
pub type OnStall = Box<dyn FnOnce(&Stall) + Send>;

/// The CPU time the process has used so far.
pub type CpuMeter = Box<dyn FnMut() -> Duration + Send>;

/// The process's CPU time (all threads).
pub fn process_cpu() -> Duration {
    // Unreadable (never seen on Linux): a clock that stands still, so beats alone decide.
    ProcessTime::try_now().map_or(Duration::ZERO, |t| t.as_duration())
}

impl Watchdog {
    /// Watches `task`: on a hang, prints the [`Stall`] line on stderr and ends the process
    /// with [`EXIT_STALLED`], running no destructor and flushing nothing.
    pub fn start(task: &'static str, policy: StallPolicy) -> std::io::Result<Watchdog> {
        Watchdog::start_with(task, policy, Box::new(process_cpu), Box::new(exit_stalled))
    }

    /// Watches `task` with `cpu` as the process's CPU clock, calling `on_stall` once on a
    /// hang (then watching no more).
    pub fn start_with(
        task: &'static str,
        policy: StallPolicy,
        cpu: CpuMeter,
        on_stall: OnStall,
    ) -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                doing: "starting".to_string(),
                last_beat: Instant::now(),
                longest_step: Duration::ZERO,
                stopped: false,
            }),
            wake: Condvar::new(),
        });
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{task} watchdog"))
            .spawn(move || watch(task, policy, &watched, cpu, on_stall))?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// A step of the run's repeated work finished (a batch, a training step); the run now
    /// does `doing`. The gap since the last beat counts as a step's time.
    pub fn beat(&self, doing: impl Into<String>) {
        self.progress(doing.into(), true);
    }

    /// A stage of the run begins (scanning, building the graph): progress, but the time the
    /// previous stage took is not a step's time.
    pub fn stage(&self, doing: impl Into<String>) {
        self.progress(doing.into(), false);
    }

    fn progress(&self, doing: String, step: bool) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        if step {
            state.longest_step = state.longest_step.max(now - state.last_beat);
        }
        state.last_beat = now;
        state.doing = doing;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The watchdog thread: polls until stopped or a hang is seen.
fn watch(
    task: &'static str,
    policy: StallPolicy,
    shared: &Shared,
    mut cpu: CpuMeter,
    on_stall: OnStall,
) {
    let mut cpu_before = cpu();
    // Start of the current run of idle polls, if the last poll was idle.
    let mut idle_since: Option<Instant> = None;
    let mut state = shared.lock();
    loop {
        let polled = Instant::now();
        state = shared
            .wake
            .wait_timeout(state, policy.poll)
            .map(|(s, _)| s)
            .unwrap_or_else(|p| p.into_inner().0);
        if state.stopped {
            return;
        }
        let now = Instant::now();
        let cpu_now = cpu();
        let used = cpu_now.saturating_sub(cpu_before);
        cpu_before = cpu_now;
        let idle = used.as_secs_f64() < policy.idle_cpu * (now - polled).as_secs_f64();
        idle_since = if idle {
            Some(idle_since.unwrap_or(polled))
        } else {
            None
        };
        let limit = policy.limit(state.longest_step);
        let silent = now - state.last_beat;
        let idle_for = idle_since.map_or(Duration::ZERO, |t| now - t);
        if silent > limit && idle_for > limit {
            let stall = Stall {
                task,
                doing: state.doing.clone(),
                silent_for: silent,
                longest_step: state.longest_step,
            };
            drop(state);
            on_stall(&stall);
            return;
        }
    }
}

/// Prints `stall` and ends the process the way a kill -9 would, as far as files go.
fn exit_stalled(stall: &Stall) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n{stall}");
    end_now(EXIT_STALLED);
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn end_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or destructors, so
    // it cannot block on a lock that a hung thread holds; it takes any int.
    unsafe { libc::_exit(code) }
}

#[cfg(not(unix))]
fn end_now(code: i32) -> ! {
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn quick(floor_ms: u64) -> StallPolicy {
        StallPolicy {
            floor: Duration::from_millis(floor_ms),
            step_factor: 5,
            idle_cpu: 0.05,
            poll: Duration::from_millis(20),
        }
    }

    /// A CPU clock that stands still (an idle process) or runs with the wall clock (one
    /// busy core), whatever the other tests in this process do.
    fn fake_cpu(busy: bool) -> CpuMeter {
        let start = Instant::now();
        Box::new(move || {
            if busy {
                start.elapsed()
            } else {
                Duration::ZERO
            }
        })
    }

    fn watched(policy: StallPolicy, busy: bool) -> (Watchdog, mpsc::Receiver<Stall>) {
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::start_with(
            "test",
            policy,
            fake_cpu(busy),
            Box::new(move |s: &Stall| {
                let _ = tx.send(s.clone());
            }),
        )
        .expect("a thread");
        (dog, rx)
    }

    #[test]
    fn silence_without_cpu_is_a_hang_naming_what_was_done() {
        let (dog, stalls) = watched(quick(500), false);
        for i in 0..5 {
            dog.beat(format!("step {i}"));
        }
        let stall = stalls
            .recv_timeout(Duration::from_secs(10))
            .expect("a hang reported");
        assert_eq!(stall.doing, "step 4");
        assert!(stall.silent_for >= Duration::from_millis(500));
        let line = stall.to_string();
        assert!(line.starts_with("dino-curate test: no progress"), "{line}");
        assert!(
            line.contains("while step 4") && !line.contains('\n'),
            "{line}"
        );
    }

    #[test]
    fn steady_beats_are_no_hang() {
        // Beats 20 ms apart for 1.5 s, past the 1 s allowance: only a pause of a whole
        // second between two of them (a very loaded machine) could end it.
        let (dog, stalls) = watched(quick(1000), false);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            std::thread::sleep(Duration::from_millis(20));
            dog.beat("working");
        }
        assert!(stalls.try_recv().is_err());
    }

    #[test]
    fn a_long_computation_is_no_hang() {
        let (_dog, stalls) = watched(quick(150), true);
        std::thread::sleep(Duration::from_millis(800));
        assert!(stalls.try_recv().is_err(), "busy for 800 ms without a beat");
    }

    #[test]
    fn the_allowance_grows_with_the_longest_step() {
        let policy = quick(100);
        assert_eq!(policy.limit(Duration::ZERO), Duration::from_millis(100));
        assert_eq!(
            policy.limit(Duration::from_secs(2)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_long_stage_does_not_stretch_the_allowance() {
        let (dog, stalls) = watched(quick(600), false);
        for _ in 0..5 {
            dog.beat("step");
        }
        dog.stage("a long stage");
        std::thread::sleep(Duration::from_millis(300));
        dog.stage("stepping again");
        let stall = stalls
            .recv_timeout(Duration::from_secs(10))
            .expect("a hang reported");
        assert!(stall.longest_step < Duration::from_millis(300), "{stall:?}");
        assert_eq!(stall.doing, "stepping again");
    }

    #[test]
    fn dropping_stops_the_watch() {
        // Unstopped, the idle watch would report a hang 300 ms in (and the join in `drop`
        // would wait for it).
        let (dog, stalls) = watched(quick(300), false);
        drop(dog);
        std::thread::sleep(Duration::from_millis(800));
        assert!(stalls.try_recv().is_err());
    }
}
