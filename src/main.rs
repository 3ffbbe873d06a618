//! The `herd` binary: parses the command line and runs it. All the work is
//! in the library.

// The server has no unsafe code, and must keep it that way.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    match herd::process::cli::run(herd::process::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
