//! `herd-bench sink`: a neighbour that takes a server's floods and drops
//! them, so that a throughput run measures a server that stores *and*
//! floods every update, without other herd servers competing for the CPUs.
//!
//! It accepts links (`PEER`, then `STREAM`, answered with `SINCE` "all" so
//! that nothing is resent from the store), reads and discards every line,
//! acknowledges as a herd receiver must (`ACK`, or the server would take the
//! link for dead), and runs until killed.

use std::io::Write as _;

use anyhow::{anyhow, Result};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::host;
use crate::probe::{challenge_line, is_stream_opening, parse_peer, Acks};

/// Options of `herd-bench sink`.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Address to listen on, HOST:PORT (the address the herd's config gives
    /// this neighbour).
    #[arg(long)]
    pub listen: String,
    /// CPU to pin the executor to.
    #[arg(long, default_value_t = 1)]
    pub cpu: usize,
    /// Read each link at most this many bytes per second: a slow
    /// neighbour, whose links back up into the server. 0: read at once.
    #[arg(long, default_value_t = 0)]
    pub bytes_per_sec: u64,
}

/// Reads one link to its end, answering its `STREAM` line; at most
/// `bytes_per_sec` bytes a second when that is not 0.
async fn drain(mut stream: TcpStream, bytes_per_sec: u64) {
    // A slow sink reads small pieces, so its pace is even.
    let size = if bytes_per_sec == 0 {
        64 * 1024
    } else {
        bytes_per_sec.clamp(1, 4096) as usize
    };
    let mut buf = vec![0u8; size];
    let start = std::time::Instant::now();
    let mut taken: u64 = 0;
    let mut acks = Acks::new();
    // Only the first few lines can hold `STREAM`; after that just discard.
    let mut head = Vec::new();
    let mut answered = false;
    let mut challenged = false;
    loop {
        if bytes_per_sec > 0 {
            // Not before the bytes taken so far are due at this rate.
            let due =
                start + std::time::Duration::from_secs_f64(taken as f64 / bytes_per_sec as f64);
            let wait = due.saturating_duration_since(std::time::Instant::now());
            if !wait.is_zero() {
                glommio::timer::sleep(wait).await;
            }
        }
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        taken += n as u64;
        if let Some(ack) = acks.due(std::time::Instant::now()) {
            if stream.write_all(ack).await.is_err() {
                return;
            }
        }
        if answered {
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&head).into_owned();
        if !challenged && text.lines().any(|l| parse_peer(l).is_some()) {
            // The handshake of a herd without a secret (bench herds have
            // none): a fresh nonce and no proof.
            challenged = true;
            if stream.write_all(challenge_line().as_bytes()).await.is_err() {
                return;
            }
        }
        if text.lines().any(is_stream_opening) {
            let answer = format!("SINCE {}\n", u64::MAX);
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            acks.start(std::time::Instant::now());
            answered = true;
            head = Vec::new();
        } else if head.len() > 4096 {
            // Not a herd link that asks; keep discarding.
            answered = true;
        }
    }
}

/// Runs the sink until the process is killed.
pub fn run(args: &SinkArgs) -> Result<()> {
    host::check_cpus(&[args.cpu])?;
    let addr = host::resolve(&args.listen)?;
    let bytes_per_sec = args.bytes_per_sec;
    let handle = LocalExecutorBuilder::new(Placement::Fixed(args.cpu))
        .name("sink")
        .spawn(move || async move {
            let listener = TcpListener::bind(addr).map_err(|e| anyhow!("binding {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| anyhow!("{e}"))?;
            println!("sink listening on {bound}");
            let _ = std::io::stdout().flush();
            #[allow(unreachable_code)]
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        glommio::spawn_local(drain(stream, bytes_per_sec)).detach();
                    }
                    Err(_) => glommio::timer::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        })
        .map_err(|e| anyhow!("starting the sink executor: {e}"))?;
    handle.join().map_err(|e| anyhow!("sink executor: {e}"))?
}
