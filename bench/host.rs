//! Facts about this host that every subcommand checks before it starts:
//! which CPUs the process may pin to, the file-descriptor limit, addresses
//! and durations given on the command line. Errors here mean "could not
//! run" (exit code 2).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::sched_getaffinity;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::Pid;

/// Fails unless every CPU in `cpus` is in this process's affinity mask and
/// none is listed twice (two executors pinned to one CPU measure nothing).
pub fn check_cpus(cpus: &[usize]) -> Result<()> {
    if cpus.is_empty() {
        bail!("--cpus lists no CPU");
    }
    let allowed =
        sched_getaffinity(Pid::from_raw(0)).context("reading this process's CPU affinity")?;
    for (i, &cpu) in cpus.iter().enumerate() {
        if !allowed.is_set(cpu).unwrap_or(false) {
            bail!("CPU {cpu} is not available to this process");
        }
        if cpus[..i].contains(&cpu) {
            bail!("CPU {cpu} is listed twice");
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, so thousands of
/// connections do not fail on the default 1024.
pub fn raise_fd_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The first socket address `addr` (HOST:PORT) resolves to.
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// `secs` as a duration; `what` names the option in the error.
pub fn seconds(what: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| anyhow!("{what} must be a number of seconds >= 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_or_nan_seconds_are_refused() {
        assert!(seconds("--duration", -1.0).is_err());
        assert!(seconds("--duration", f64::NAN).is_err());
        assert_eq!(
            seconds("--duration", 1.5).unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn duplicate_or_missing_cpus_are_refused() {
        assert!(check_cpus(&[]).is_err());
        assert!(check_cpus(&[0, 0]).is_err());
        assert!(check_cpus(&[100_000]).is_err());
        assert!(check_cpus(&[0]).is_ok());
    }
}
