//! The closed loop: a fixed number of requests in flight per connection.

use std::time::Instant;

use anyhow::Result;

use super::driver::{Driver, TICK};
use super::sleep_until;

impl Driver {
    /// Gives the requests queued this turn their send time: now, just
    /// before the next wait hands them to the kernel.
    pub(super) fn stamp(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let at = Instant::now();
        for &(c, n) in &self.fresh {
            let pending = &mut self.lines[c].pending;
            let from = pending.len() - n;
            for p in pending.range_mut(from..) {
                p.at = at;
            }
        }
        self.fresh.clear();
    }

    /// Closed loop: `depth` requests in flight per connection; each reply
    /// lets one more out.
    pub(super) fn closed(&mut self) -> Result<()> {
        let depth = self.plan.depth;
        sleep_until(self.clock.t0);
        for c in 0..self.lines.len() {
            let n = self.issue(c, depth, self.clock.t0);
            self.fresh.push((c, n));
            self.pump(c);
        }
        self.stamp();
        loop {
            let now = Instant::now();
            if self.outstanding == 0 {
                break;
            }
            if now >= self.clock.drain_end {
                self.give_up();
                break;
            }
            let timeout = TICK.min(self.clock.drain_end - now);
            self.turn(timeout, true)?;
            self.stamp();
        }
        Ok(())
    }
}
