//! One executor's connections and what both loops share: issuing
//! requests (IAMAT and WHATSAT lines, or OwnTracks posts), and the reply
//! reader that frames, validates and times every reply.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::plan::{Clock, Plan};
use super::DRAIN;
use crate::check::{check_iamat, check_whatsat_against, reply_len, Expected, ReplyKind};
use crate::posts::{self, Framed, Posts};
use crate::stats::Stats;
use crate::uring::{Conns, Event};
use crate::workload::{Request, Workload};

/// The longest one wait for completions may last, so the clock is looked
/// at often enough to end the run on time.
pub(super) const TICK: Duration = Duration::from_millis(10);
/// Closed loop: completions a turn waits for (see `Conns::wait`); measured
/// on the 2-core VM against the bare server at 64 x 16: 1 gave 0.74 M/s,
/// 4 gave 1.0 M/s, 16 no more, 32 less.
pub(super) const BATCH: usize = 4;

/// What a request awaits: how its reply is framed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Awaits {
    /// An AT line echoing the IAMAT.
    Iamat,
    /// An AT line, then the places JSON.
    Whatsat,
    /// An HTTP response: 200 and `[]`.
    Post,
}

/// A request that awaits its reply; `at` is when it was sent (closed loop)
/// or scheduled (open loop): latency is measured from it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub(super) awaits: Awaits,
    /// Length of its echo in the connection's `echoes`.
    pub(super) echo_len: u32,
    pub(super) at: Instant,
}

/// What a connection sends.
pub(super) enum Work {
    /// IAMAT (and WHATSAT) lines.
    Lines(Workload),
    /// OwnTracks locations, posted over HTTP.
    Posts(Posts),
}

/// One connection's requests: what it sends next and what it awaits.
pub(super) struct Line {
    pub(super) work: Work,
    pub(super) pending: VecDeque<Pending>,
    /// What the replies of `pending` must echo, back to back, from
    /// `echo_start`.
    pub(super) echoes: Vec<u8>,
    pub(super) echo_start: usize,
    /// Requests this connection may still send.
    pub(super) quota: u64,
    pub(super) alive: bool,
    /// The last WHATSAT body that passed validation (see check.rs).
    pub(super) last_body: Vec<u8>,
}

impl Line {
    pub(super) fn take_echo(&mut self, len: usize) {
        self.echo_start += len;
        // Compact now and then, not per reply, but soon: the buffer must
        // stay small enough for every connection's to stay in cache. (At
        // 64 KiB, 64 connections swept 4 MiB and each copy into it missed
        // the cache: small copies were 8 % of the generator at 64 x 16.)
        if self.echo_start >= ECHO_COMPACT && self.echo_start * 2 >= self.echoes.len() {
            self.echoes.drain(..self.echo_start);
            self.echo_start = 0;
        }
    }
}

/// Records `n` replies to requests sent at `at` and received at `now`, in
/// the measured window that began at `warm_end`.
fn record_replies(stats: &mut Stats, warm_end: Instant, at: Instant, now: Instant, n: u64) {
    let ns = nanos(now.saturating_duration_since(at));
    stats.requests += n;
    stats.latency.saturating_record_n(ns, n);
    let second = (at - warm_end).as_secs() as usize;
    if let Some(h) = stats.per_second.get_mut(second) {
        h.saturating_record_n(ns, n);
    }
    stats.last_reply = stats.last_reply.max(Some(now));
}

/// Why a reply is wrong.
enum Fault {
    /// A reply line (AT, WHATSAT or `?`).
    Line(crate::check::Invalid),
    /// An HTTP response.
    Post(posts::BadResponse),
}

/// Bytes of echoes taken before the rest is moved to the front.
const ECHO_COMPACT: usize = 4096;

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A reply, shortened and made printable for an error sample.
pub(super) fn shown(reply: &[u8]) -> String {
    let cut = &reply[..reply.len().min(160)];
    format!("{:?}", String::from_utf8_lossy(cut))
}

/// One executor's run: its connections, their requests, its statistics.
/// Everything here belongs to one thread; nothing is shared but the plan.
pub(super) struct Driver {
    pub(super) plan: Arc<Plan>,
    pub(super) clock: Clock,
    pub(super) conns: Conns,
    pub(super) lines: Vec<Line>,
    pub(super) stats: Stats,
    /// Requests sent and not yet answered, over all live connections.
    pub(super) outstanding: usize,
    /// Closed loop: (connection, requests) queued this turn, stamped with
    /// the time just before they are handed to the kernel.
    pub(super) fresh: Vec<(usize, usize)>,
    pub(super) events: Vec<(usize, Event)>,
    /// Open loop: scheduled times of the requests queued this turn.
    pub(super) dues: Vec<Instant>,
    /// Open loop: how late a request went out when the schedule was lost.
    pub(super) hopeless: Option<Duration>,
    /// Connections with requests awaiting replies.
    pub(super) busy_lines: usize,
}

impl Driver {
    /// Queues up to `n` requests on connection `c`, sent or scheduled at
    /// `at`; returns how many (fewer once its quota is spent).
    pub(super) fn issue(&mut self, c: usize, n: usize, at: Instant) -> usize {
        let line = &mut self.lines[c];
        let out = self.conns.queue(c);
        let n = n.min(usize::try_from(line.quota).unwrap_or(usize::MAX));
        if line.pending.is_empty() && n > 0 {
            self.busy_lines += 1;
        }
        for _ in 0..n {
            let before = line.echoes.len();
            let awaits = match &mut line.work {
                Work::Lines(work) => match work.next_request(out, &mut line.echoes) {
                    Request::Iamat { .. } => Awaits::Iamat,
                    Request::Whatsat { .. } => Awaits::Whatsat,
                },
                Work::Posts(posts) => {
                    posts.next_post(out);
                    Awaits::Post
                }
            };
            line.pending.push_back(Pending {
                awaits,
                echo_len: (line.echoes.len() - before) as u32,
                at,
            });
        }
        line.quota -= n as u64;
        self.outstanding += n;
        self.stats.sent += n as u64;
        n
    }

    /// Frames, validates and records every complete reply received on `c`;
    /// returns how many there were. Bytes that cannot be framed as an HTTP
    /// response end the connection (what follows them cannot be told apart).
    pub(super) fn on_received(&mut self, c: usize, now: Instant) -> usize {
        let Driver {
            plan,
            clock,
            conns,
            lines,
            stats,
            outstanding,
            busy_lines,
            ..
        } = self;
        let line = &mut lines[c];
        let Some(inbuf) = conns.received(c) else {
            return 0;
        };
        let mut answered = 0;
        // Replies to requests sent together and received together have
        // one latency: they are counted as one run, recorded once (the
        // clock arithmetic and histogram updates were 3 % of the
        // generator's CPU at 64 x 16, per reply).
        let mut run: Option<(Instant, u64)> = None;
        let mut unframable = None;
        while let Some(&p) = line.pending.front() {
            let (len, verdict) = if p.awaits == Awaits::Post {
                match posts::frame(inbuf.bytes()) {
                    Ok(Framed::Whole { len, verdict }) => (len, verdict.map_err(Fault::Post)),
                    Ok(Framed::Partial) => break,
                    Err(why) => {
                        unframable = Some(why);
                        break;
                    }
                }
            } else {
                let kind = if p.awaits == Awaits::Whatsat {
                    ReplyKind::Whatsat
                } else {
                    ReplyKind::Iamat
                };
                let Some(len) = reply_len(inbuf.bytes(), kind) else {
                    break;
                };
                let reply = &inbuf.bytes()[..len];
                let echo = &line.echoes[line.echo_start..line.echo_start + p.echo_len as usize];
                let expected = Expected {
                    server: plan.server.as_deref().map(str::as_bytes),
                    echo,
                };
                let verdict = if kind == ReplyKind::Whatsat {
                    check_whatsat_against(
                        reply,
                        &expected,
                        plan.max_results as usize,
                        &mut line.last_body,
                    )
                } else {
                    check_iamat(reply, &expected)
                };
                (len, verdict.map_err(Fault::Line))
            };
            let reply = &inbuf.bytes()[..len];
            match verdict {
                Ok(()) => {
                    stats.validated += 1;
                    if p.at >= clock.warm_end && p.at < clock.end {
                        match &mut run {
                            Some((at, n)) if *at == p.at => *n += 1,
                            _ => {
                                if let Some((at, n)) = run.replace((p.at, 1)) {
                                    record_replies(stats, clock.warm_end, at, now, n);
                                }
                            }
                        }
                    }
                }
                Err(Fault::Line(why)) => {
                    stats.errors.invalid += 1;
                    stats.sample(|| format!("connection {c}: {why}: {}", shown(reply)));
                }
                Err(Fault::Post(why)) => {
                    stats.errors.invalid += 1;
                    stats.sample(|| format!("connection {c}: {why}: {}", posts::shown(reply)));
                }
            }
            inbuf.consume(len);
            line.take_echo(p.echo_len as usize);
            line.pending.pop_front();
            answered += 1;
        }
        if let Some((at, n)) = run {
            record_replies(stats, clock.warm_end, at, now, n);
        }
        *outstanding -= answered;
        if answered > 0 && line.pending.is_empty() {
            *busy_lines -= 1;
        }
        if line.pending.is_empty() && !inbuf.bytes().is_empty() {
            stats.errors.invalid += 1;
            let extra = shown(inbuf.bytes());
            stats.sample(|| format!("connection {c}: bytes after the last reply: {extra}"));
            let all = inbuf.bytes().len();
            inbuf.consume(all);
        }
        if let Some(why) = unframable {
            let bytes = shown(inbuf.bytes());
            self.fail(c, &format!("{why}: {bytes}"));
        }
        answered
    }

    /// Counts a failed connection and the replies it will never give.
    pub(super) fn fail(&mut self, c: usize, what: &str) {
        let line = &mut self.lines[c];
        if !line.alive {
            return;
        }
        line.alive = false;
        line.quota = 0;
        let lost = line.pending.len();
        if lost > 0 {
            self.busy_lines -= 1;
        }
        line.pending.clear();
        self.outstanding -= lost;
        self.stats.errors.connection += 1;
        self.stats.errors.missing += lost as u64;
        self.stats.sample(|| format!("connection {c}: {what}"));
    }

    /// Counts the replies that did not come before the drain deadline.
    pub(super) fn give_up(&mut self) {
        for (c, line) in self.lines.iter_mut().enumerate() {
            let lost = line.pending.len();
            if lost == 0 {
                continue;
            }
            line.pending.clear();
            self.busy_lines -= 1;
            self.stats.errors.missing += lost as u64;
            self.stats.sample(|| {
                format!("connection {c}: {lost} replies missing {DRAIN:?} after the run")
            });
        }
        self.outstanding = 0;
    }

    /// Sends what is queued on `c` and keeps a receive armed while it lives.
    pub(super) fn pump(&mut self, c: usize) {
        if !self.lines[c].alive {
            return;
        }
        if let Err(e) = self.conns.flush(c).and_then(|()| self.conns.arm(c)) {
            self.fail(c, &e.to_string());
        }
    }

    /// Waits for completions (at most `timeout`) and handles them; the
    /// closed loop refills each connection with as many requests as it got
    /// replies.
    pub(super) fn turn(&mut self, timeout: Duration, refill: bool) -> Result<()> {
        // Batch only while enough connections await replies for a batch to
        // come at all.
        let batch = if refill && self.busy_lines >= 4 * BATCH {
            BATCH
        } else {
            1
        };
        self.conns
            .wait(batch, timeout, &mut self.events)
            .map_err(|e| anyhow!("io_uring wait: {e}"))?;
        let now = Instant::now();
        let mut events = std::mem::take(&mut self.events);
        for &(c, event) in &events {
            match event {
                Event::Received(_) => {
                    let answered = self.on_received(c, now);
                    if refill && answered > 0 && now < self.clock.end {
                        let n = self.issue(c, answered, now);
                        if n > 0 {
                            self.fresh.push((c, n));
                        }
                    }
                    self.pump(c);
                }
                Event::Closed => self.fail(c, "server closed the connection"),
                Event::Failed(errno) => {
                    let e = std::io::Error::from_raw_os_error(errno);
                    self.fail(c, &format!("socket: {e}"));
                }
                Event::Sent => {}
            }
        }
        events.clear();
        self.events = events;
        Ok(())
    }
}
