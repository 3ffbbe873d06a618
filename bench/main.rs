//! `herd-bench`: the load generator of herd. Thin: parses the command line
//! and dispatches to one module per subcommand; every subcommand returns its
//! error count, and this file alone turns results into exit codes
//! (0 ok, 1 errors in replies, 2 could not run).

mod bare;
mod check;
mod host;
mod load;
mod plot;
mod posts;
mod probe;
mod report;
mod sink;
mod stats;
mod tls;
mod uring;
mod wire;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator, baseline server and propagation probe for herd.
#[derive(Parser, Debug)]
#[command(name = "herd-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Drive a server with IAMAT/WHATSAT requests, or OwnTracks posts over
    /// HTTP (--post owntracks), in a closed loop or an open loop (--rate);
    /// validate every reply, report latency.
    Load(load::LoadArgs),
    /// Run the baseline: a bare glommio line server with canned AT replies.
    Bare(bare::BareArgs),
    /// Measure update-to-visibility time across a herd, posing as a
    /// neighbour server.
    Propagation(probe::PropagationArgs),
    /// Act as a neighbour that takes a server's floods and drops them.
    Sink(sink::SinkArgs),
    /// Draw latency by percentile, or over time, from interval logs (SVG).
    Plot(plot::PlotArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not failures.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match &cli.command {
        Command::Load(args) => load::run(args),
        Command::Bare(args) => bare::run(args).map(|()| 0),
        Command::Propagation(args) => probe::run(args),
        Command::Sink(args) => sink::run(args).map(|()| 0),
        Command::Plot(args) => plot::run(args).map(|()| 0),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("herd-bench: {errors} error(s)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("herd-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
