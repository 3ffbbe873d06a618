//! `herd-bench propagation`: how long an IAMAT takes to become visible
//! elsewhere in the herd. The bench poses as a server (`--probe-name`) that
//! the herd's config lists as a neighbour: herd servers open links to it and
//! flood records to it like to any neighbour. It then sends fresh IAMATs to
//! one server and times, per client id, the first arrival of its record on
//! any link. All on one pinned executor; every wait is bounded.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use futures_lite::io::ReadHalf;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::check::{check_iamat, reply_len, Expected, ReplyKind};
use crate::host;
use crate::report::Summary;
use crate::stats::{histogram, Errors};
use crate::wire::{sleep_until, until, InBuf};
use crate::workload::write_location;

/// Options of `herd-bench propagation`.
#[derive(clap::Args, Debug, Clone)]
pub struct PropagationArgs {
    /// Herd server to send the IAMATs to, HOST:PORT.
    #[arg(long)]
    pub send: String,
    /// Where the bench listens for the herd's links, HOST:PORT (the address
    /// the herd's config gives the probe server).
    #[arg(long)]
    pub probe_listen: String,
    /// Server name the herd's config gives the probe.
    #[arg(long)]
    pub probe_name: String,
    /// IAMATs to send, each for a fresh client id.
    #[arg(long, default_value_t = 2000)]
    pub count: u64,
    /// IAMATs per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds to wait after the first link arrives (let the other links
    /// and the herd settle).
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// CPU to pin the executor to (the first one listed is used).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub cpus: Vec<usize>,
    /// Text naming this run in the report.
    #[arg(long, default_value = "propagation")]
    pub label: String,
    /// Print only the JSON line.
    #[arg(long)]
    pub json_only: bool,
}

/// How long to wait for the herd's first link.
const LINK_WAIT: Duration = Duration::from_secs(15);
/// How long to wait after the last send for records and replies.
const STRAGGLERS: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The server name of a `PEER` handshake line, if `line` is one.
pub fn parse_peer(line: &str) -> Option<&str> {
    let mut fields = line.split_ascii_whitespace();
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some("PEER"), Some(name), Some(_nonce), None) => Some(name),
        _ => None,
    }
}

/// The answer to a `PEER` line in a herd without a secret: `CHALLENGE`
/// with a fresh nonce and no proof. (The herd then writes `PROOF -`.)
pub fn challenge_line() -> String {
    let nonce = herd::net::nonce::fresh().unwrap_or_else(|_| "0".repeat(32));
    format!("CHALLENGE {nonce} -\n")
}

/// True for herd's `STREAM <shard> <epoch> [<head>]` line, which follows
/// `PROOF` on a link and expects `SINCE <n>` back (servers that do not send
/// it are served all the same).
pub fn is_stream_opening(line: &str) -> bool {
    matches!(
        herd::pure::protocol::parse_line(line.as_bytes()),
        herd::pure::protocol::Parsed::Command(herd::pure::protocol::Command::Stream { .. })
    )
}

/// The probe number `n` of an AT record line about client `prop-<n>-<pid>`.
pub fn parse_probe_record(line: &str, pid: u32) -> Option<u64> {
    let mut fields = line.split_ascii_whitespace();
    if fields.next() != Some("AT") {
        return None;
    }
    let id = fields.nth(2)?;
    let rest = id.strip_prefix("prop-")?;
    let (n, owner) = rest.split_once('-')?;
    if owner.parse::<u32>().ok()? != pid {
        return None;
    }
    n.parse().ok()
}

/// The probe's state, shared by the link readers and the sender.
struct Probe {
    pid: u32,
    /// Send instant of probe `n`, once sent.
    sent: RefCell<Vec<Option<Instant>>>,
    /// Whether probe `n`'s record has arrived.
    arrived: RefCell<Vec<bool>>,
    latency: RefCell<Histogram<u64>>,
    received: Cell<u64>,
    links: Cell<usize>,
}

impl Probe {
    fn on_line(&self, line: &str, now: Instant) {
        let Some(n) = parse_probe_record(line, self.pid) else {
            return;
        };
        let Ok(i) = usize::try_from(n) else { return };
        let Some(at) = self.sent.borrow().get(i).copied().flatten() else {
            return;
        };
        let mut arrived = self.arrived.borrow_mut();
        // First arrival only: later copies came the long way round.
        match arrived.get_mut(i) {
            Some(seen) if !*seen => *seen = true,
            _ => return,
        }
        let ns = u64::try_from(now.saturating_duration_since(at).as_nanos()).unwrap_or(u64::MAX);
        self.latency.borrow_mut().saturating_record(ns);
        self.received.set(self.received.get() + 1);
    }
}

/// The `ACK` keepalive a herd receiver owes the sender of a link (see
/// PROTOCOL.md): without it the sender takes the link for dead after its
/// link timeout and redials, which would show in every figure.
pub struct Acks {
    last: Option<Instant>,
}

/// How often a bench neighbour acknowledges; herd's default heartbeat is
/// 1 s, and any read (herd sends `SEQ` at least that often) is a chance.
const ACK_EVERY: Duration = Duration::from_millis(250);

impl Acks {
    /// Nothing to acknowledge before the stream is answered.
    pub fn new() -> Acks {
        Acks { last: None }
    }

    /// The stream was answered: keepalives are owed from now on.
    pub fn start(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// The `ACK` line to write now, if one is due.
    pub fn due(&mut self, now: Instant) -> Option<&'static [u8]> {
        let last = self.last?;
        if now.saturating_duration_since(last) < ACK_EVERY {
            return None;
        }
        self.last = Some(now);
        Some(b"ACK 0\n")
    }
}

/// Reads one link from a herd server: a `PEER` line, then records.
async fn serve_link(mut stream: TcpStream, probe: Rc<Probe>, me: Rc<str>) {
    let mut inbuf = InBuf::new(64 * 1024);
    let mut peer: Option<String> = None;
    let mut acks = Acks::new();
    loop {
        let Some(spare) = inbuf.spare() else { return };
        match stream.read(spare).await {
            Ok(0) | Err(_) => return,
            Ok(n) => inbuf.filled(n),
        }
        let now = Instant::now();
        if let Some(ack) = acks.due(now) {
            if stream.write_all(ack).await.is_err() {
                return;
            }
        }
        while let Some(nl) = inbuf.bytes().iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&inbuf.bytes()[..nl]).into_owned();
            inbuf.consume(nl + 1);
            if peer.is_some() {
                if line.starts_with("PROOF ") {
                    continue;
                }
                if is_stream_opening(&line) {
                    // herd's link catch-up: `STREAM` asks what we already
                    // have; "everything" means no resend from its store, so
                    // only live floods arrive and the timings stay clean.
                    let answer = format!("SINCE {}\n", u64::MAX);
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    acks.start(now);
                } else {
                    probe.on_line(&line, now);
                }
                continue;
            }
            match parse_peer(&line) {
                Some(name) => {
                    eprintln!("herd-bench: {me} got a link from {name}");
                    if stream.write_all(challenge_line().as_bytes()).await.is_err() {
                        return;
                    }
                    peer = Some(name.to_owned());
                    probe.links.set(probe.links.get() + 1);
                }
                None => {
                    eprintln!("herd-bench: {me} dropped a link that began {line:?}");
                    return;
                }
            }
        }
    }
}

/// Reads the IAMAT replies of the send connection and checks each.
async fn read_replies(
    mut reader: ReadHalf<TcpStream>,
    pending: Rc<RefCell<VecDeque<(String, String, String)>>>,
    errors: Rc<Cell<Errors>>,
    deadline: Rc<Cell<Instant>>,
    done: Rc<Cell<bool>>,
) {
    let mut inbuf = InBuf::new(64 * 1024);
    let add = |f: &dyn Fn(&mut Errors)| {
        let mut e = errors.get();
        f(&mut e);
        errors.set(e);
    };
    loop {
        if done.get() && pending.borrow().is_empty() {
            return;
        }
        let Some(spare) = inbuf.spare() else {
            add(&|e| e.connection += 1);
            return;
        };
        // The deadline moves out while sending; re-read it every 50 ms.
        let wake = deadline
            .get()
            .min(Instant::now() + Duration::from_millis(50));
        match until(wake, reader.read(spare)).await {
            None if Instant::now() >= deadline.get() => return,
            None => continue,
            Some(Ok(0)) | Some(Err(_)) => {
                add(&|e| e.connection += 1);
                return;
            }
            Some(Ok(n)) => inbuf.filled(n),
        }
        let mut pending = pending.borrow_mut();
        while let Some((id, location, time)) = pending.front() {
            let Some(len) = reply_len(inbuf.bytes(), ReplyKind::Iamat) else {
                break;
            };
            let echo = format!("{id} {location} {time}");
            let expected = Expected {
                server: None,
                echo: echo.as_bytes(),
            };
            if let Err(why) = check_iamat(&inbuf.bytes()[..len], &expected) {
                eprintln!("herd-bench: IAMAT reply for {id}: {why}");
                add(&|e| e.invalid += 1);
            }
            inbuf.consume(len);
            pending.pop_front();
        }
    }
}

/// What the probe measured.
struct Outcome {
    latency: Histogram<u64>,
    received: u64,
    errors: Errors,
    send_window: Duration,
}

async fn probe_main(args: PropagationArgs) -> Result<Outcome> {
    let listen = host::resolve(&args.probe_listen)?;
    let send = host::resolve(&args.send)?;
    let settle = host::seconds("--settle", args.settle)?;
    let count = usize::try_from(args.count).map_err(|_| anyhow!("--count too large"))?;
    let me: Rc<str> = args.probe_name.as_str().into();
    let probe = Rc::new(Probe {
        pid: std::process::id(),
        sent: RefCell::new(vec![None; count]),
        arrived: RefCell::new(vec![false; count]),
        latency: RefCell::new(histogram()?),
        received: Cell::new(0),
        links: Cell::new(0),
    });
    let listener =
        TcpListener::bind(listen).map_err(|e| anyhow!("cannot listen on {listen}: {e}"))?;
    {
        let (probe, me) = (probe.clone(), me.clone());
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        glommio::spawn_local(serve_link(stream, probe.clone(), me.clone()))
                            .detach();
                    }
                    Err(_) => glommio::timer::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .detach();
    }
    let link_deadline = Instant::now() + LINK_WAIT;
    while probe.links.get() == 0 {
        if Instant::now() >= link_deadline {
            bail!(
                "no herd server linked to {me} on {listen} within {LINK_WAIT:?}: is {me} \
                 a neighbour at that address in the herd's config?"
            );
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    glommio::timer::sleep(settle).await;

    let stream = TcpStream::connect_timeout(send, CONNECT_TIMEOUT)
        .await
        .map_err(|e| anyhow!("cannot connect to {send}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = futures_lite::io::split(stream);
    let pending = Rc::new(RefCell::new(VecDeque::new()));
    let errors = Rc::new(Cell::new(Errors::default()));
    let t0 = Instant::now();
    let interval = 1e9 / args.rate;
    let send_end = t0 + Duration::from_nanos((count as f64 * interval) as u64);
    let reply_deadline = Rc::new(Cell::new(send_end + STRAGGLERS));
    let done = Rc::new(Cell::new(false));
    let replies = glommio::spawn_local(read_replies(
        reader,
        pending.clone(),
        errors.clone(),
        reply_deadline.clone(),
        done.clone(),
    ));
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut n = 0usize;
    let mut unsent = 0;
    while n < count {
        sleep_until(t0 + Duration::from_nanos((n as f64 * interval) as u64)).await;
        let now = Instant::now();
        out.clear();
        batch.clear();
        while n < count && t0 + Duration::from_nanos((n as f64 * interval) as u64) <= now {
            let id = format!("prop-{n}-{}", probe.pid);
            let mut location = String::new();
            write_location(&mut location, probe.pid as usize, n as u64);
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let time = format!("{}.{:09}", wall.as_secs(), wall.subsec_nanos());
            out.extend_from_slice(format!("IAMAT {id} {location} {time}\n").as_bytes());
            pending.borrow_mut().push_back((id, location, time));
            batch.push(n);
            n += 1;
        }
        let at = Instant::now();
        {
            let mut sent = probe.sent.borrow_mut();
            for &i in &batch {
                sent[i] = Some(at);
            }
        }
        let written = until(send_end + STRAGGLERS, writer.write_all(&out)).await;
        if !matches!(written, Some(Ok(()))) {
            let mut e = errors.get();
            e.connection += 1;
            errors.set(e);
            unsent = count - n;
            break;
        }
    }
    let last_send = Instant::now();
    let send_window = last_send.saturating_duration_since(t0);
    // Records and replies still on their way get a bounded wait.
    let deadline = last_send + STRAGGLERS;
    reply_deadline.set(deadline);
    done.set(true);
    while (probe.received.get() as usize) < count - unsent && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    replies.await;
    let mut errors = errors.get();
    errors.missing += (count as u64) - probe.received.get();
    errors.missing += pending.borrow().len() as u64;
    let latency = probe.latency.borrow().clone();
    Ok(Outcome {
        latency,
        received: probe.received.get(),
        errors,
        send_window,
    })
}

/// Runs `herd-bench propagation`; returns the error count (records that
/// never arrived, wrong or missing IAMAT replies).
pub fn run(args: &PropagationArgs) -> Result<u64> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of IAMATs/s");
    }
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let cpu = *args
        .cpus
        .first()
        .ok_or_else(|| anyhow!("--cpus lists no CPU"))?;
    host::check_cpus(&[cpu])?;
    let owned = args.clone();
    let outcome = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("probe")
        .spawn(move || probe_main(owned))
        .map_err(|e| anyhow!("starting the executor on CPU {cpu}: {e}"))?
        .join()
        .map_err(|e| anyhow!("probe executor failed: {e}"))??;
    let window = outcome.send_window.as_secs_f64();
    let summary = Summary {
        label: &args.label,
        mode: "propagation",
        protocol: "line",
        connections: 1,
        depth: None,
        target_rate: Some(args.rate),
        achieved_rate: if window > 0.0 {
            outcome.received as f64 / window
        } else {
            0.0
        },
        requests: outcome.received,
        errors: outcome.errors,
        latency: &outcome.latency,
        send_lag: None,
        memory: None,
        cpu: None,
        server_cpu: None,
        duration_s: (window * 1000.0).round() / 1000.0,
    };
    summary.print(args.json_only);
    Ok(outcome.errors.total())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_line_names_the_linking_server() {
        assert_eq!(parse_peer("PEER Goloman -"), Some("Goloman"));
        assert_eq!(parse_peer("PEER Goloman"), None);
        assert_eq!(parse_peer("AT Goloman +0.1 x +1+1 1"), None);
    }

    #[test]
    fn stream_opening_is_recognised() {
        assert!(is_stream_opening("STREAM 0 1763958447"));
        assert!(is_stream_opening("STREAM 0 1763958447 42"));
        assert!(!is_stream_opening("STREAM 0"));
        assert!(!is_stream_opening("STREAM 0 1 x"));
        assert!(!is_stream_opening("SEQ 12"));
        assert!(!is_stream_opening("AT G +0.1 x +1+1 1"));
    }

    #[test]
    fn records_of_this_probe_are_recognised() {
        let line = "AT Goloman +0.000000001 prop-17-4242 +1.000000+2.000000 1700000000.5";
        assert_eq!(parse_probe_record(line, 4242), Some(17));
        assert_eq!(parse_probe_record(line, 4243), None);
        assert_eq!(parse_probe_record("AT G +0.1 bench-1-2 +1+1 1", 4242), None);
        assert_eq!(parse_probe_record("PEER G -", 4242), None);
        assert_eq!(parse_probe_record("AT G +0.1", 4242), None);
    }
}
