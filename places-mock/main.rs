//! `herd-places-mock`: a local stand-in for the Google Places Nearby Search
//! API (deterministic sample data) for tests, the bench and demos. Thin:
//! parses the command line, makes the TLS certificate when asked, and runs
//! [`mock::serve`] on one glommio executor until the process ends.
//!
//! A binary of its own, not a `herd` subcommand, so that the production
//! server and library carry no fake upstream (and no certificate maker for
//! it). Tests that want the mock in-process include `mock.rs` by path.

// Like the server, the mock has no unsafe code.
#![forbid(unsafe_code)]

mod mock;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use mock::{Fault, MockSettings};

/// A local stand-in for the Google Places Nearby Search API (sample data)
/// for tests, benchmarks and demos.
#[derive(Debug, Parser)]
#[command(name = "herd-places-mock", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:12150")]
    listen: SocketAddr,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Serve HTTPS with a fresh CA and certificate (for localhost and
    /// 127.0.0.1); the CA is written to --tls-ca-out.
    #[arg(long)]
    tls: bool,
    /// Where --tls writes the CA certificate clients must trust.
    #[arg(long, default_value = "places-mock-ca.pem")]
    tls_ca_out: PathBuf,
    /// Fault for every request: none, 500, hang, notjson, empty,
    /// nolocation, or a Google status such as OVER_QUERY_LIMIT (legacy or
    /// New names; API_KEY_INVALID too).
    #[arg(long, default_value = "none")]
    fault: String,
    /// The only API key Nearby Search (New) takes (others get Google's
    /// API_KEY_INVALID); without it any non-empty key is taken.
    #[arg(long)]
    key: Option<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd-places-mock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the mock on one glommio executor until the process ends.
fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = cli.listen;
    let tls_ca_out = cli.tls.then_some(cli.tls_ca_out);
    let tls = match &tls_ca_out {
        Some(path) => {
            let pki = mock::local_pki().context("making a TLS certificate")?;
            std::fs::write(path, &pki.ca_pem)
                .with_context(|| format!("writing {}", path.display()))?;
            Some((pki.cert_pem.into_bytes(), pki.key_pem.into_bytes()))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let settings = MockSettings {
        listen,
        latency: Duration::from_millis(cli.latency_ms),
        tls,
        fault: Fault::parse(&cli.fault),
        key: cli.key,
    };
    let ca_note = tls_ca_out.map(|p| format!("; trust the CA in {}", p.display()));
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("places-mock")
        .spawn(move || async move {
            mock::serve(settings, |addr| {
                // Tests and bench/run.sh wait for this line.
                println!(
                    "places-mock listening on {scheme}://{addr} (sample data, not real places){}",
                    ca_note.unwrap_or_default()
                );
            })
            .await
        })
        .map_err(|e| anyhow::anyhow!("starting places-mock: {e}"))?;
    executor
        .join()
        .map_err(|e| anyhow::anyhow!("places-mock: {e}"))?
        .with_context(|| format!("places-mock on {listen}"))
}
