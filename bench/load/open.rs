//! The open loop: requests on a fixed timetable, latency counted from the
//! scheduled time, so a stalled server cannot hide its stall.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::driver::{nanos, Driver, TICK};
use crate::report;

/// Open loop: when the next request is due sooner than this, poll instead
/// of sleeping, since a kernel timer would wake the generator late.
pub(super) const SPIN: Duration = Duration::from_micros(30);
/// Open loop: a send this late means the generator cannot keep its
/// schedule at all; it stops at once instead of queueing without bound.
pub(super) const HOPELESS_LAG: Duration = Duration::from_secs(1);

impl Driver {
    /// Open loop: request `j` of this executor is due at a fixed time; it
    /// goes out at the first turn at or after that time, and its latency
    /// counts from the due time, so a stalled server cannot hide its stall.
    pub(super) fn open(&mut self, first: usize) -> Result<()> {
        let plan = self.plan.clone();
        let rate = plan.rate.unwrap_or(1.0);
        let (all, mine) = (plan.connections as f64, self.lines.len());
        // Connection `first + k` sends at (first + k + m * all) / rate for
        // m = 0, 1, ...: every connection of the whole run staggered
        // evenly. Merged over this executor's connections, in order.
        let t0 = self.clock.t0;
        let due = |j: usize| {
            let slot = (first + j % mine) as f64 + (j / mine) as f64 * all;
            t0 + Duration::from_nanos((slot * 1e9 / rate) as u64)
        };
        for c in 0..mine {
            self.pump(c);
        }
        let mut j = 0usize;
        let mut lag_checked = plan.warmup.is_zero();
        let mut stopped = false;
        loop {
            let now = Instant::now();
            // Judged once warm-up is over and some warm-up request went
            // out: a generator so late that its first turn comes after
            // the warm-up (a loaded machine) has sent none before then.
            if !lag_checked && now >= self.clock.warm_end && !self.stats.warmup_lag.is_empty() {
                lag_checked = true;
                self.judge_warmup_lag();
            }
            stopped |= plan.abort.load(Ordering::Relaxed);
            let mut next = due(j);
            while !stopped && next <= now && next < self.clock.end {
                let c = j % mine;
                if self.lines[c].alive && self.issue(c, 1, next) == 1 {
                    self.dues.push(next);
                }
                j += 1;
                next = due(j);
            }
            let sending = !stopped && next < self.clock.end;
            if !self.dues.is_empty() {
                for c in 0..mine {
                    if self.conns.writing(c) {
                        self.pump(c);
                    }
                }
                self.record_lags();
            }
            if !sending && self.outstanding == 0 {
                break;
            }
            if now >= self.clock.drain_end {
                self.give_up();
                break;
            }
            // Sleep until the next request is due, but poll when it is due
            // sooner than a timer could wake this thread. Never spin for
            // long: on loopback much of the network work runs in softirq
            // threads on this same CPU, and a spinning generator starves
            // them (measured at 40 k/s: send-lag p99 3 ms always polling,
            // 0.1 to 2 ms like this, on this noisy VM).
            let wake = if sending { next } else { self.clock.drain_end };
            let mut timeout = wake.saturating_duration_since(Instant::now()).min(TICK);
            if timeout < SPIN {
                timeout = Duration::ZERO;
            }
            self.turn(timeout, false)?;
        }
        if !lag_checked && !self.stats.warmup_lag.is_empty() {
            lag_checked = true;
            self.judge_warmup_lag();
        }
        if let Some(lag) = self.hopeless.take() {
            bail!(
                "the generator cannot keep up with {rate} requests/s on this executor's CPU: \
                 a request went out {:.0} ms late; use more --cpus, fewer connections or a \
                 lower --rate",
                lag.as_secs_f64() * 1e3
            );
        }
        if plan.abort.load(Ordering::Relaxed) && lag_checked {
            let p99 = self.stats.warmup_lag.value_at_quantile(0.99);
            bail!(
                "the generator cannot keep up with {rate} requests/s on this executor's CPU: \
                 warm-up send-lag p99 is {:.1} µs (limit {:.1} µs); use more --cpus, fewer \
                 connections or a lower --rate",
                report::micros(p99),
                report::micros(plan.max_lag_ns),
            );
        }
        Ok(())
    }

    /// Stops the run when the warm-up's send lag says the generator
    /// cannot hold the rate.
    fn judge_warmup_lag(&self) {
        let p99 = self.stats.warmup_lag.value_at_quantile(0.99);
        if p99 > self.plan.max_lag_ns {
            self.plan.abort.store(true, Ordering::Relaxed);
        }
    }

    /// Records how late the requests queued this turn go out.
    pub(super) fn record_lags(&mut self) {
        let sent_at = Instant::now();
        for &d in &self.dues {
            let lag = sent_at.saturating_duration_since(d);
            if lag > HOPELESS_LAG && self.hopeless.is_none() {
                self.hopeless = Some(lag);
                self.plan.abort.store(true, Ordering::Relaxed);
            }
            if d < self.clock.warm_end {
                self.stats.warmup_lag.saturating_record(nanos(lag));
            } else {
                self.stats.send_lag.saturating_record(nanos(lag));
            }
        }
        self.dues.clear();
    }
}
