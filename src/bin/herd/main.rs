//! The `herd` binary: the command line (`cli`), `herd serve` as a process
//! (`serve`: logging, signals, systemd), `herd up` (`up`) and the log
//! file (`logging`). The server itself is the library's ([`herd::start`]).
//! Errors here are `anyhow`'s, for people; the library's are typed.

// The server has no unsafe code, and must keep it that way.
#![forbid(unsafe_code)]

mod cli;
mod logging;
mod serve;
mod up;

use clap::Parser;

// jemalloc, as Redis: see Cargo.toml and tuning.md ("Allocator").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
