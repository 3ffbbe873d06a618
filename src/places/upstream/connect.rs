//! Making one new connection to the upstream: DNS off the shard thread,
//! TCP to the first address that answers (a bounded number tried), TLS with
//! the built-in web roots plus any extra CA, the HTTP/1.1 handshake, and
//! the task that drives the connection afterwards.
//!
//! Separate because it is the only part that opens sockets or resolves
//! names, and its failures are all "could not connect" (`CallError::Connect`,
//! retryable only when refused or reset), whatever step they come from.
//! It does not keep connections: the pool does.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use bytes::Bytes;
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::rt::Executor;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tracing::debug;

use super::classify::{error_chain, CallError};
use super::settings::{Target, UpstreamError};
use crate::net::http::{GlommioIo, LocalExec};

/// How many resolved addresses one connect tries before giving up (bounds the loop).
const MAX_CONNECT_ADDRS: usize = 4;

/// The sending half of one HTTP/1.1 connection, reusable once its response
/// has been read.
pub(super) type Sender = SendRequest<Full<Bytes>>;

/// Opens connections to one target.
pub(super) struct Connector {
    /// Where connections go.
    target: Target,
    /// TLS connector and server name (SNI + verification) for https.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// Sets up TLS for an https target (web roots plus `extra_ca_pem`); plain
    /// http needs nothing. No connection is made yet.
    pub(super) fn new(target: Target, extra_ca_pem: Option<&[u8]>) -> Result<Self, UpstreamError> {
        let tls = if target.tls {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| UpstreamError::Tls(format!("host {:?}: {e}", target.host)))?;
            Some((tls_connector(extra_ca_pem)?, name))
        } else {
            None
        };
        Ok(Connector { target, tls })
    }

    /// Opens a new connection (TCP, then TLS for https) and starts its hyper task.
    pub(super) async fn connect(&self) -> Result<Sender, CallError> {
        let origin = self.target.origin();
        let connect_err = |cause: String, kind: Option<io::ErrorKind>| CallError::Connect {
            origin: origin.clone(),
            cause,
            kind,
        };
        let addrs = self
            .resolve()
            .await
            .map_err(|e| connect_err(format!("cannot resolve host: {e}"), None))?;
        let mut last: Option<io::Error> = None;
        let mut stream = None;
        for addr in addrs.iter().take(MAX_CONNECT_ADDRS) {
            match TcpStream::connect(*addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(io::Error::from(e)),
            }
        }
        let stream = match (stream, last) {
            (Some(stream), _) => stream,
            (None, Some(e)) => return Err(connect_err(e.to_string(), Some(e.kind()))),
            (None, None) => return Err(connect_err("host has no address".to_owned(), None)),
        };
        // Requests are small and latency-bound: do not let Nagle hold them back.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let handshake_err = |e: hyper::Error| connect_err(error_chain(&e), None);
        match &self.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(GlommioIo::new(stream))
                    .await
                    .map_err(handshake_err)?;
                LocalExec.execute(drive(conn));
                Ok(sender)
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| connect_err(format!("TLS handshake failed: {e}"), None))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(GlommioIo::new(tls))
                    .await
                    .map_err(handshake_err)?;
                LocalExec.execute(drive(conn));
                Ok(sender)
            }
        }
    }

    /// Socket addresses of the target; names are looked up off the shard thread.
    async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let port = self.target.port;
        if let Ok(ip) = self.target.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let host = self.target.host.clone();
        glommio::executor()
            .spawn_blocking(move || {
                (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|addrs| addrs.collect())
            })
            .await
    }
}

/// Runs one client connection until it closes; errors only matter for debugging,
/// the request that hit them reports them itself.
async fn drive<T>(conn: hyper::client::conn::http1::Connection<T, Full<Bytes>>)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    if let Err(e) = conn.await {
        debug!(error = %error_chain(&e), "places upstream connection ended");
    }
}

/// TLS client setup: built-in web roots plus the extra PEM CAs, ring crypto, HTTP/1.1 ALPN.
fn tls_connector(extra_ca_pem: Option<&[u8]>) -> Result<TlsConnector, UpstreamError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0usize;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| UpstreamError::Tls(format!("extra CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| UpstreamError::Tls(format!("extra CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(UpstreamError::Tls(
                "extra CA PEM holds no certificate".to_owned(),
            ));
        }
    }
    // An explicit provider: no dependence on a process-wide default being installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
