//! How results leave the bench: a table on stdout, exactly one `JSON ` line
//! with the same fields (snake_case), the HdrHistogram interval log, and the
//! server's memory from /proc. Only formatting and files; no measuring.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2Serializer;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::load::SATURATED_PCT;
use crate::stats::Errors;

/// How busy the generator's and the server's CPUs were over the measured
/// window, percent per CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuUse {
    /// The generator's CPUs.
    pub generator: BTreeMap<usize, f64>,
    /// The server's CPUs (empty when they were not given).
    pub server: BTreeMap<usize, f64>,
    /// The server process's own busy share of its CPUs (`--pid`), which
    /// other processes on those CPUs do not inflate.
    pub server_process: Option<f64>,
    /// True when the run was closed loop and the server's CPUs were not
    /// saturated: the server waited for the generator. `None` when the
    /// server's CPUs are unknown, or in open loop (where idle is the point).
    pub generator_bound: Option<bool>,
}

fn mean(m: &BTreeMap<usize, f64>) -> Option<f64> {
    (!m.is_empty()).then(|| (m.values().sum::<f64>() / m.len() as f64 * 10.0).round() / 10.0)
}

impl CpuUse {
    /// The figures of one run (`closed`: closed loop); `server_process` is the server process's
    /// own busy share of its CPUs when known, which then judges saturation.
    pub fn new(
        generator: BTreeMap<usize, f64>,
        server: BTreeMap<usize, f64>,
        server_process: Option<f64>,
        closed: bool,
    ) -> CpuUse {
        let generator_bound = match server_process.or_else(|| mean(&server)) {
            Some(busy) if closed && !server.is_empty() => Some(busy < SATURATED_PCT),
            _ => None,
        };
        CpuUse {
            generator,
            server,
            server_process: server_process.map(|p| (p * 10.0).round() / 10.0),
            generator_bound,
        }
    }
}

/// The CPU time the server process used over the measured window, from
/// its /proc/PID/stat (clock ticks: 10 ms each where `CLK_TCK` is 100).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerCpu {
    /// User and system time, seconds.
    pub seconds: f64,
    /// The same over the requests answered in the window, µs (`None` when
    /// none was).
    pub us_per_request: Option<f64>,
}

/// The server's memory at the end of a run, from /proc/PID/status.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// Peak resident set size, MiB.
    pub hwm_mib: f64,
}

/// Everything one run reports.
pub struct Summary<'a> {
    /// Free text naming the run.
    pub label: &'a str,
    /// `closed`, `open` or `propagation`.
    pub mode: &'a str,
    /// What the requests were: `line` (IAMAT and WHATSAT) or `owntracks`
    /// (locations posted over HTTP).
    pub protocol: &'a str,
    /// Connections that carried requests.
    pub connections: usize,
    /// Requests in flight per connection (closed loop only).
    pub depth: Option<usize>,
    /// Requested total rate, requests/s (open loop and propagation).
    pub target_rate: Option<f64>,
    /// Validated replies per second of the measured window.
    pub achieved_rate: f64,
    /// Validated replies in the measured window.
    pub requests: u64,
    /// Errors by kind.
    pub errors: Errors,
    /// Latency, ns.
    pub latency: &'a Histogram<u64>,
    /// The generator's own send lag, ns (open loop only).
    pub send_lag: Option<&'a Histogram<u64>>,
    /// The server's memory, when `--pid` was given and readable.
    pub memory: Option<Memory>,
    /// CPU busy shares, when /proc/stat could be read.
    pub cpu: Option<CpuUse>,
    /// The server process's CPU time, when `--pid` was given and readable.
    pub server_cpu: Option<ServerCpu>,
    /// Length of the measured window, s.
    pub duration_s: f64,
}

/// Nanoseconds as microseconds rounded to one decimal.
pub fn micros(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// The quantiles every report carries, as (JSON key, table header, quantile).
const QUANTILES: [(&str, &str, f64); 5] = [
    ("p50_us", "p50", 0.5),
    ("p90_us", "p90", 0.9),
    ("p99_us", "p99", 0.99),
    ("p999_us", "p99.9", 0.999),
    ("p9999_us", "p99.99", 0.9999),
];

impl Summary<'_> {
    /// The JSON object of the run: the same fields as the table.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "label": self.label,
            "mode": self.mode,
            "protocol": self.protocol,
            "connections": self.connections,
            "depth": self.depth,
            "target_rate": self.target_rate,
            "achieved_rate": (self.achieved_rate * 10.0).round() / 10.0,
            "requests": self.requests,
            "errors": self.errors.total(),
            "errors_invalid": self.errors.invalid,
            "errors_missing": self.errors.missing,
            "errors_connection": self.errors.connection,
            "duration_s": self.duration_s,
            "max_us": micros(self.latency.max()),
            "send_lag_p50_us": self.send_lag.map(|h| micros(h.value_at_quantile(0.5))),
            "send_lag_p99_us": self.send_lag.map(|h| micros(h.value_at_quantile(0.99))),
            "send_lag_max_us": self.send_lag.map(|h| micros(h.max())),
            "server_vmrss_mib": self.memory.map(|m| m.rss_mib),
            "server_vmhwm_mib": self.memory.map(|m| m.hwm_mib),
            "server_cpu_s": self.server_cpu.map(|c| (c.seconds * 100.0).round() / 100.0),
            "server_cpu_us_per_request": self
                .server_cpu
                .and_then(|c| c.us_per_request)
                .map(|us| (us * 1000.0).round() / 1000.0),
        });
        for (key, _, q) in QUANTILES {
            v[key] = json!(micros(self.latency.value_at_quantile(q)));
        }
        let by_cpu = |m: &BTreeMap<usize, f64>| -> Value {
            m.iter().map(|(c, p)| (c.to_string(), json!(p))).collect()
        };
        let cpu = self.cpu.as_ref();
        v["generator_cpus_busy_pct"] = cpu.map_or(Value::Null, |c| by_cpu(&c.generator));
        v["server_cpus_busy_pct"] = cpu.map_or(Value::Null, |c| by_cpu(&c.server));
        v["generator_cpu_busy_pct"] = json!(cpu.and_then(|c| mean(&c.generator)));
        v["server_cpu_busy_pct"] = json!(cpu.and_then(|c| mean(&c.server)));
        v["generator_bound"] = json!(cpu.and_then(|c| c.generator_bound));
        v["server_process_busy_pct"] = json!(cpu.and_then(|c| c.server_process));
        v
    }

    /// The table: a header row and a value row, columns right-aligned.
    /// Columns that do not apply to the mode are left out.
    pub fn table(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let mut cols: Vec<(String, String)> = vec![
            ("label".into(), self.label.to_owned()),
            ("mode".into(), self.mode.to_owned()),
            ("conns".into(), self.connections.to_string()),
            ("depth".into(), opt(self.depth.map(|d| d.to_string()))),
            (
                "target/s".into(),
                opt(self.target_rate.map(|r| format!("{r:.0}"))),
            ),
            ("achieved/s".into(), format!("{:.1}", self.achieved_rate)),
            ("requests".into(), self.requests.to_string()),
            ("errors".into(), self.errors.total().to_string()),
        ];
        for (_, header, q) in QUANTILES {
            cols.push((
                format!("{header} µs"),
                format!("{:.1}", micros(self.latency.value_at_quantile(q))),
            ));
        }
        cols.push((
            "max µs".into(),
            format!("{:.1}", micros(self.latency.max())),
        ));
        if let Some(lag) = self.send_lag {
            for (header, ns) in [
                ("lag p50 µs", lag.value_at_quantile(0.5)),
                ("lag p99 µs", lag.value_at_quantile(0.99)),
                ("lag max µs", lag.max()),
            ] {
                cols.push((header.into(), format!("{:.1}", micros(ns))));
            }
        }
        if let Some(m) = self.memory {
            cols.push(("rss MiB".into(), format!("{:.1}", m.rss_mib)));
            cols.push(("hwm MiB".into(), format!("{:.1}", m.hwm_mib)));
        }
        let cpu = self.cpu.as_ref();
        if let Some(busy) = cpu.and_then(|c| mean(&c.generator)) {
            cols.push(("gen cpu %".into(), format!("{busy:.1}")));
        }
        if let Some(busy) = cpu.and_then(|c| mean(&c.server)) {
            cols.push(("server cpu %".into(), format!("{busy:.1}")));
        }
        if let Some(us) = self.server_cpu.and_then(|c| c.us_per_request) {
            cols.push(("server µs/req".into(), format!("{us:.2}")));
        }
        let (mut head, mut row) = (String::new(), String::new());
        for (i, (h, v)) in cols.iter().enumerate() {
            let width = h.chars().count().max(v.chars().count());
            let sep = if i == 0 { "" } else { "  " };
            // Left-align the label so long labels read naturally.
            if i == 0 {
                let _ = write!(head, "{h:<width$}");
                let _ = write!(row, "{v:<width$}");
            } else {
                let _ = write!(head, "{sep}{h:>width$}");
                let _ = write!(row, "{sep}{v:>width$}");
            }
        }
        let mut table = format!("{head}\n{row}\n");
        if let Some(c) = cpu.filter(|c| c.generator_bound == Some(true)) {
            let _ = writeln!(
                table,
                "generator-bound: the server's CPUs were {:.1} % busy (under {SATURATED_PCT} %): \
                 this run measured the generator, not the server",
                mean(&c.server).unwrap_or(0.0)
            );
        }
        table
    }

    /// Prints the table (unless `json_only`) and the `JSON ` line to stdout.
    pub fn print(&self, json_only: bool) {
        let mut out = std::io::stdout().lock();
        if !json_only {
            let _ = out.write_all(self.table().as_bytes());
        }
        let _ = writeln!(out, "JSON {}", self.to_json());
        let _ = out.flush();
    }
}

/// Reads VmRSS and VmHWM of process `pid`.
pub fn read_memory(pid: i32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_memory(&text).ok_or_else(|| anyhow!("{path} has no VmRSS/VmHWM lines"))
}

/// VmRSS and VmHWM from the text of a /proc/PID/status file.
fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some((kib / 1024.0 * 10.0).round() / 10.0)
    };
    Some(Memory {
        rss_mib: field("VmRSS:")?,
        hwm_mib: field("VmHWM:")?,
    })
}

/// Writes the standard HdrHistogram interval log (V2 serialized, base64)
/// with one histogram per second of the measured window, which started at
/// `start` (wall clock) and lasted `window` (so a last partial second gets
/// its true length). Interval maxima are in milliseconds, as the Java tools
/// expect.
pub fn write_interval_log(
    path: &Path,
    intervals: &[Histogram<u64>],
    start: SystemTime,
    window: Duration,
    label: &str,
) -> Result<()> {
    let start_secs = start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut text: Vec<u8> = Vec::new();
    // Headers as the Java HistogramLogWriter writes them, legend included,
    // so HistogramLogAnalyzer and friends read the file unchanged.
    writeln!(text, "#[Logged with herd-bench {label}]")?;
    writeln!(text, "#[Histogram log format version 1.3]")?;
    writeln!(text, "#[StartTime: {start_secs:.3} (seconds since epoch)]")?;
    writeln!(text, "#[BaseTime: {start_secs:.3} (seconds since epoch)]")?;
    writeln!(
        text,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )?;
    let mut serializer = V2Serializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(1_000_000.0)
            .begin_log_with(&mut text, &mut serializer)?;
        for (i, h) in intervals.iter().enumerate() {
            let from = Duration::from_secs(i as u64);
            let length = window.saturating_sub(from).min(Duration::from_secs(1));
            log.write_histogram(h, from, length, None)
                .map_err(|e| anyhow!("writing interval {i}: {e}"))?;
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    fn summary<'a>(h: &'a Histogram<u64>, lag: Option<&'a Histogram<u64>>) -> Summary<'a> {
        Summary {
            label: "t",
            mode: "open",
            protocol: "line",
            connections: 4,
            depth: None,
            target_rate: Some(500.0),
            achieved_rate: 499.95,
            requests: 1000,
            errors: Errors::default(),
            latency: h,
            send_lag: lag,
            memory: Some(Memory {
                rss_mib: 12.5,
                hwm_mib: 13.0,
            }),
            cpu: None,
            server_cpu: Some(ServerCpu {
                seconds: 0.25,
                us_per_request: Some(250.0),
            }),
            duration_s: 2.0,
        }
    }

    #[test]
    fn json_line_has_the_table_fields_in_microseconds() {
        let mut h = crate::stats::histogram().unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let lag = crate::stats::histogram().unwrap();
        let s = summary(&h, Some(&lag));
        let v = s.to_json();
        assert_eq!(v["requests"], 1000);
        assert_eq!(v["errors"], 0);
        // 3 significant digits: quantiles are within 0.1 % of the truth.
        let near = |key: &str, want: f64| {
            let got = v[key].as_f64().unwrap();
            assert!((got - want).abs() <= want * 0.001, "{key}: {got}");
        };
        near("p50_us", 500.0);
        near("p99_us", 990.0);
        near("max_us", 1000.0);
        assert_eq!(v["send_lag_p99_us"], 0.0);
        assert_eq!(v["server_cpu_s"], 0.25);
        assert_eq!(v["server_cpu_us_per_request"], 250.0);
        assert_eq!(v["server_vmhwm_mib"], 13.0);
        assert_eq!(v["depth"], Value::Null);
        let table = s.table();
        assert_eq!(table.lines().count(), 2);
        assert!(table.contains("p99.99 µs") && table.contains("lag max µs"));
    }

    #[test]
    fn a_closed_loop_run_that_left_the_server_idle_is_flagged_generator_bound() {
        let h = crate::stats::histogram().unwrap();
        let cpus = |pct: f64| BTreeMap::from([(0, pct)]);
        let mut s = summary(&h, None);
        s.cpu = Some(CpuUse::new(cpus(100.0), cpus(60.0), None, true));
        assert_eq!(s.to_json()["generator_bound"], true);
        assert_eq!(s.to_json()["server_cpus_busy_pct"]["0"], 60.0);
        assert!(s.table().contains("generator-bound"));
        s.cpu = Some(CpuUse::new(cpus(70.0), cpus(99.5), None, true));
        assert_eq!(s.to_json()["generator_bound"], false);
        // A core kept busy by another process: the server's own share decides.
        s.cpu = Some(CpuUse::new(cpus(70.0), cpus(99.5), Some(40.0), true));
        assert_eq!(s.to_json()["generator_bound"], true);
        assert_eq!(s.to_json()["server_process_busy_pct"], 40.0);
        s.cpu = Some(CpuUse::new(cpus(70.0), cpus(99.5), None, true));
        assert_eq!(s.to_json()["generator_bound"], false);
        assert!(!s.table().contains("generator-bound"));
        // Open loop leaves the server idle on purpose; unknown server CPUs
        // say nothing.
        s.cpu = Some(CpuUse::new(cpus(70.0), cpus(10.0), None, false));
        assert_eq!(s.to_json()["generator_bound"], Value::Null);
        s.cpu = Some(CpuUse::new(cpus(70.0), BTreeMap::new(), None, true));
        assert_eq!(s.to_json()["generator_bound"], Value::Null);
        assert_eq!(s.to_json()["generator_cpu_busy_pct"], 70.0);
    }

    #[test]
    fn memory_is_read_from_status_text() {
        let text = "Name:\therd\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            parse_memory(text),
            Some(Memory {
                rss_mib: 10.0,
                hwm_mib: 20.0
            })
        );
        assert_eq!(parse_memory("Name: x\n"), None);
    }

    #[test]
    fn interval_log_reads_back_one_histogram_per_second() {
        let dir = std::env::temp_dir().join(format!("herd-bench-log-{}", std::process::id()));
        let mut hists = Vec::new();
        for i in 1..=3u64 {
            let mut h = crate::stats::histogram().unwrap();
            h.record(i * 1_000_000).unwrap();
            hists.push(h);
        }
        write_interval_log(
            &dir,
            &hists,
            SystemTime::now(),
            Duration::from_millis(2500),
            "t",
        )
        .unwrap();
        let text = std::fs::read(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        let intervals: Vec<_> = IntervalLogIterator::new(&text)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 3);
        assert_eq!(intervals[2].start_timestamp(), Duration::from_secs(2));
        assert_eq!(intervals[2].duration(), Duration::from_millis(500));
        assert!((intervals[2].max() - 3.0).abs() < 0.01);
    }
}
