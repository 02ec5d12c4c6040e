//! The `dino-curate` command line: parse, run, report.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// mimalloc keeps freed large buffers for reuse; glibc unmaps buffers above 32 MB at once
/// and the next step faults every page back in (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lets a closed stdout (`dino-curate dups | head`) end the process quietly, as it ends any
/// Unix tool, instead of `println!` panicking on the broken pipe.
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
