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

/// Pins the calling thread to `cpu`.
pub fn pin_thread(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("pinning a thread to CPU {cpu}"))
}

/// Time each CPU spent busy and in all, in clock ticks, from /proc/stat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// `(busy, total)` ticks, indexed by CPU number; CPUs missing from the
    /// file are `(0, 0)`.
    pub per_cpu: Vec<(u64, u64)>,
}

impl CpuTimes {
    /// Reads /proc/stat now.
    pub fn read() -> Result<CpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Ok(CpuTimes::parse(&text))
    }

    /// The per-CPU lines of /proc/stat text. Busy is everything but idle
    /// and iowait; guest time is already inside user time, so it is not
    /// added again.
    pub fn parse(text: &str) -> CpuTimes {
        let mut per_cpu = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(cpu) = fields
                .next()
                .and_then(|f| f.strip_prefix("cpu"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let ticks: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
            if ticks.len() < 5 {
                continue;
            }
            let total: u64 = ticks.iter().sum();
            let idle = ticks[3] + ticks[4];
            if per_cpu.len() <= cpu {
                per_cpu.resize(cpu + 1, (0, 0));
            }
            per_cpu[cpu] = (total - idle, total);
        }
        CpuTimes { per_cpu }
    }

    /// Percent of the time from `earlier` to `self` that `cpu` was busy;
    /// `None` when the CPU is unknown or no tick passed.
    pub fn busy_pct_since(&self, earlier: &CpuTimes, cpu: usize) -> Option<f64> {
        let (b1, t1) = *self.per_cpu.get(cpu)?;
        let (b0, t0) = *earlier.per_cpu.get(cpu)?;
        let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
        let busy = b1.saturating_sub(b0).min(total);
        Some((busy as f64 * 1000.0 / total as f64).round() / 10.0)
    }
}

/// CPU time process `pid` has used so far, user and system, all its
/// threads: `utime + stime` of /proc/PID/stat, in clock ticks (10 ms
/// where `CLK_TCK` is 100) turned into a duration.
pub fn process_cpu_time(pid: i32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_process_ticks(&text).ok_or_else(|| anyhow!("{path}: no utime/stime"))?;
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .ok_or_else(|| anyhow!("the clock tick (sysconf CLK_TCK) is unknown"))?;
    Ok(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// `utime + stime` (fields 14 and 15) of a /proc/PID/stat line. The
/// process name (field 2, in parentheses) may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // Field 3 (the state) is the first after the name.
    let mut fields = after_name.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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
    fn cpu_busy_is_everything_but_idle_and_iowait() {
        let before = CpuTimes::parse(
            "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\n",
        );
        // CPU 0: 90 more busy ticks of 100; CPU 1: 10 busy (5 in iowait
        // do not count) of 100.
        let after = CpuTimes::parse(
            "cpu  0\ncpu0 60 0 40 50 0 0 0 0 0 0\ncpu1 10 0 10 125 5 0 0 0 0 0\nintr 1 2\n",
        );
        assert_eq!(after.busy_pct_since(&before, 0), Some(90.0));
        assert_eq!(after.busy_pct_since(&before, 1), Some(10.0));
        assert_eq!(after.busy_pct_since(&before, 2), None);
        assert_eq!(before.busy_pct_since(&before, 0), None);
    }

    #[test]
    fn process_time_is_user_plus_system_counted_past_the_name() {
        let stat = "4242 (herd (shard) 0) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1500 250 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_process_ticks(stat), Some(1750));
        assert_eq!(parse_process_ticks("4242 (herd) S 1 2"), None);
        assert_eq!(
            process_cpu_time(std::process::id() as i32).map(|_| ()).ok(),
            Some(())
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
