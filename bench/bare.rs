//! `herd-bench bare`: the baseline server. One pinned glommio executor
//! that answers every line with a canned AT line echoing the bytes after
//! the line's first space, with no parsing at all: what the load generator
//! measures against it is the cost of the loopback, the runtime and the
//! generator itself, the floor under any herd figure. Only IAMAT loads make
//! sense against it (its WHATSAT replies carry no JSON).
//!
//! It runs until killed (SIGTERM or SIGINT end it the default way).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Result};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::host;
use crate::wire::InBuf;

/// Options of `herd-bench bare`.
#[derive(clap::Args, Debug, Clone)]
pub struct BareArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one; the
    /// address is printed on stdout).
    #[arg(long)]
    pub listen: String,
    /// CPU to pin the executor to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// Wait this many microseconds per line before replying: a throttled
    /// server that idles, for showing how a run that cannot saturate the
    /// server is flagged generator-bound.
    #[arg(long, default_value_t = 0)]
    pub delay_us: u64,
}

/// What every reply starts with.
const PREFIX: &[u8] = b"AT Bare +0.000000000 ";

/// Appends one canned reply per complete line of `input` to `out`; returns
/// how many bytes of `input` those lines took.
pub fn write_replies(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut used = 0;
    while let Some(nl) = input[used..].iter().position(|&b| b == b'\n') {
        let line = &input[used..used + nl + 1];
        out.extend_from_slice(PREFIX);
        match line.iter().position(|&b| b == b' ') {
            Some(space) => out.extend_from_slice(&line[space + 1..]),
            None => out.push(b'\n'),
        }
        used += nl + 1;
    }
    used
}

/// Serves one connection: one write per read batch.
async fn serve(mut stream: TcpStream, delay: Duration) {
    let _ = stream.set_nodelay(true);
    let mut inbuf = InBuf::new(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        // A line over the buffer limit is not a client we serve.
        let Some(spare) = inbuf.spare() else { return };
        match stream.read(spare).await {
            Ok(0) | Err(_) => return,
            Ok(n) => inbuf.filled(n),
        }
        out.clear();
        let used = write_replies(inbuf.bytes(), &mut out);
        let lines = inbuf.bytes()[..used]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        inbuf.consume(used);
        if !delay.is_zero() && lines > 0 {
            glommio::timer::sleep(delay * lines as u32).await;
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Runs `herd-bench bare` until the process is killed.
pub fn run(args: &BareArgs) -> Result<()> {
    host::check_cpus(&[args.cpu])?;
    let addr = host::resolve(&args.listen)?;
    host::raise_fd_limit();
    let delay = Duration::from_micros(args.delay_us);
    let handle = LocalExecutorBuilder::new(Placement::Fixed(args.cpu))
        .name("bare")
        .spawn(move || listen(addr, delay))
        .map_err(|e| anyhow!("starting the executor on CPU {}: {e}", args.cpu))?;
    handle
        .join()
        .map_err(|e| anyhow!("bare executor failed: {e}"))?
}

/// Binds, says where on stdout, and accepts forever.
async fn listen(addr: SocketAddr, delay: Duration) -> Result<()> {
    let listener = TcpListener::bind(addr).map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| anyhow!("listener address: {e}"))?;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "bare listening on {local}");
    let _ = stdout.flush();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(stream, delay)).detach();
            }
            // Out of descriptors: pause instead of spinning.
            Err(_) => glommio::timer::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_complete_line_gets_the_canned_reply() {
        let mut out = Vec::new();
        let input = b"IAMAT a +1+2 3\nIAMAT b +4+5 6\nIAMAT c";
        let used = write_replies(input, &mut out);
        assert_eq!(used, 30);
        assert_eq!(
            out,
            b"AT Bare +0.000000000 a +1+2 3\nAT Bare +0.000000000 b +4+5 6\n"
        );
        out.clear();
        assert_eq!(write_replies(b"HELLO\n", &mut out), 6);
        assert_eq!(out, b"AT Bare +0.000000000 \n");
    }
}
