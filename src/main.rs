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

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same index in its v2 and v3
/// headers; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the kernel (its default purges it
/// 10 ms after the free). A training step frees and reallocates the same activation
/// buffers every step; purged pages came back as page faults and zeroing, 6-8 % of a
/// ViT-Tiny step (docs/benchmarks.md). The process keeps its peak memory until it exits.
#[allow(unsafe_code)]
fn keep_freed_memory_mapped() {
    // SAFETY: sets one of mimalloc's integer options; any value is valid for it, and
    // mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    keep_freed_memory_mapped();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
