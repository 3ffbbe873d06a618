//! What one executor measured: latency and send-lag histograms, counts and
//! error samples. Each executor owns one `Stats` (no sharing across
//! threads); they travel back through the executor's join handle and are
//! merged on the main thread.

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;

/// Largest value a histogram holds: one hour in nanoseconds. Larger values
/// are clamped (a run that slow is broken anyway, and a fixed range keeps
/// recording allocation-free).
const MAX_NS: u64 = 3_600_000_000_000;

/// How many error descriptions to keep, to say what went wrong.
const MAX_SAMPLES: usize = 8;

/// A histogram of nanoseconds with 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_NS, 3).map_err(|e| anyhow!("creating a histogram: {e}"))
}

/// Errors by kind; their sum is the error count that is reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    /// Replies that failed validation, `?` replies included.
    pub invalid: u64,
    /// Requests whose reply never came (connection lost, or not in time).
    pub missing: u64,
    /// Connections that failed (refused, reset, closed by the server, or
    /// sent bytes that cannot be framed as replies).
    pub connection: u64,
}

impl Errors {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.invalid + self.missing + self.connection
    }
}

/// Measurements of one executor, or of all of them once merged.
pub struct Stats {
    /// Latency of validated replies in the measured window, in ns.
    pub latency: Histogram<u64>,
    /// Send lag (actual send − scheduled) in the measured window, in ns.
    pub send_lag: Histogram<u64>,
    /// Send lag during warm-up, in ns: decides whether the generator keeps up.
    pub warmup_lag: Histogram<u64>,
    /// Latency per second of the measured window, for the interval log.
    pub per_second: Vec<Histogram<u64>>,
    /// Validated replies to requests of the measured window.
    pub requests: u64,
    /// Validated replies, warm-up included.
    pub validated: u64,
    /// Requests written, warm-up included.
    pub sent: u64,
    /// Errors by kind.
    pub errors: Errors,
    /// The first few errors, described.
    pub samples: Vec<String>,
    /// When the last reply of the measured window came.
    pub last_reply: Option<std::time::Instant>,
}

impl Stats {
    /// Empty statistics with `intervals` one-second histograms (0 when no
    /// interval log is wanted, which saves their memory).
    pub fn new(intervals: usize) -> Result<Stats> {
        Ok(Stats {
            latency: histogram()?,
            send_lag: histogram()?,
            warmup_lag: histogram()?,
            per_second: (0..intervals).map(|_| histogram()).collect::<Result<_>>()?,
            requests: 0,
            validated: 0,
            sent: 0,
            errors: Errors::default(),
            samples: Vec::new(),
            last_reply: None,
        })
    }

    /// Keeps `what` as an error sample unless enough are kept already.
    pub fn sample(&mut self, what: impl FnOnce() -> String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(what());
        }
    }

    /// Adds `other` into `self`; one-second histograms merge by index.
    pub fn merge(&mut self, other: Stats) -> Result<()> {
        let add = |into: &mut Histogram<u64>, from: &Histogram<u64>| {
            into.add(from)
                .map_err(|e| anyhow!("merging histograms: {e:?}"))
        };
        add(&mut self.latency, &other.latency)?;
        add(&mut self.send_lag, &other.send_lag)?;
        add(&mut self.warmup_lag, &other.warmup_lag)?;
        for (i, h) in other.per_second.iter().enumerate() {
            match self.per_second.get_mut(i) {
                Some(into) => add(into, h)?,
                None => self.per_second.push(h.clone()),
            }
        }
        self.requests += other.requests;
        self.validated += other.validated;
        self.sent += other.sent;
        self.errors.invalid += other.errors.invalid;
        self.errors.missing += other.errors.missing;
        self.errors.connection += other.errors.connection;
        self.last_reply = self.last_reply.max(other.last_reply);
        for s in other.samples {
            self.sample(|| s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_histograms_by_index() {
        let mut a = Stats::new(2).unwrap();
        let mut b = Stats::new(3).unwrap();
        a.latency.record(1_000).unwrap();
        b.latency.record(3_000).unwrap();
        a.per_second[1].record(5).unwrap();
        b.per_second[1].record(7).unwrap();
        b.per_second[2].record(9).unwrap();
        a.requests = 1;
        b.requests = 2;
        b.errors.missing = 4;
        a.merge(b).unwrap();
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.per_second.len(), 3);
        assert_eq!(a.per_second[1].len(), 2);
        assert_eq!(a.per_second[2].len(), 1);
        assert_eq!(a.requests, 3);
        assert_eq!(a.errors.total(), 4);
    }

    #[test]
    fn values_beyond_an_hour_are_clamped_not_lost() {
        let mut h = histogram().unwrap();
        h.saturating_record(u64::MAX);
        assert_eq!(h.len(), 1);
    }
}
