//! What the two line-protocol connections share, the client's
//! (`connection.rs`) and an incoming link's (`link/incoming.rs`): the
//! socket under them, how one ends, writing the replies, the receive clock,
//! and lines as they are logged and refused.

use crate::pure::link_session;
use crate::pure::protocol::{self, PosixTime};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use std::future::Future;
use std::io::ErrorKind;
use std::time::{SystemTime, UNIX_EPOCH};

/// The receive time, read once per read.
pub(crate) fn now() -> PosixTime {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    PosixTime {
        secs: since.as_secs(),
        nanos: since.subsec_nanos(),
    }
}

/// A connection's bytes: plain TCP, or TLS over it. Its timeouts are those
/// of the TCP socket underneath.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for futures_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer closed it (or a stop shut its reading side).
    Closed,
    /// A client sent nothing for `client_idle_timeout_ms`.
    IdleTimeout,
    /// A link heard nothing for `link_timeout_ms`, or its neighbour is no
    /// longer one.
    Silent,
    /// Reading failed.
    ReadFailed,
    /// The peer did not take its replies within the write deadline.
    WriteDeadline,
    /// Writing failed.
    WriteFailed,
    /// The journal stopped before records of owed replies were on disk
    /// (`fsync: always`): those replies are not sent.
    NotOnDisk,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Closed => "closed",
            End::IdleTimeout => "idle timeout",
            End::Silent => "silent",
            End::ReadFailed => "read failed",
            End::WriteDeadline => "write deadline passed",
            End::WriteFailed => "write failed",
            End::NotOnDisk => "journal stopped before the records were on disk",
        })
    }
}

/// Writes and clears the pending replies; names the failure if any. Not
/// an `async fn`: one stores its arguments twice, in every connection's
/// task.
#[allow(clippy::manual_async_fn)]
pub(crate) fn flush<'a>(
    stream: &'a mut impl Socket,
    out: &'a mut Vec<u8>,
) -> impl Future<Output = Result<(), End>> + 'a {
    async move {
        if out.is_empty() {
            return Ok(());
        }
        let result = stream.write_all(out).await;
        out.clear();
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::TimedOut => Err(End::WriteDeadline),
            Err(_) => Err(End::WriteFailed),
        }
    }
}

/// A line as logged: handshake lines lose their nonces and proofs, and
/// `AUTH` lines their tokens.
pub(crate) fn shown(line: &[u8]) -> String {
    if protocol::is_auth_line(line) {
        let mut refused = Vec::new();
        protocol::write_auth_refused(&mut refused, line);
        // `? AUTH <client>`: the line without its token.
        let kept = String::from_utf8_lossy(&refused[2..refused.len() - 1]).into_owned();
        return format!("{kept} <token not shown>");
    }
    link_session::redacted(line).unwrap_or_else(|| String::from_utf8_lossy(line).into_owned())
}

/// Appends the reply to an invalid line (`? <line>`) and logs it.
pub(crate) fn reply_invalid(out: &mut Vec<u8>, line: &[u8], peer: &str) {
    let start = out.len();
    protocol::write_invalid(out, line);
    tracing::debug!(%peer, reply = %shown(&out[start..out.len() - 1]), "out");
}
