//! TLS for the load generator (`herd-bench load --tls-ca`): one rustls
//! client session per connection, whose records the io_uring engine
//! (`uring.rs`) moves exactly as it moves a plain connection's bytes.
//!
//! This module owns a session's plaintext on both sides: the requests
//! queued, sealed into records before a send, and the replies opened from
//! the records received. After the handshake it never touches a socket, so
//! a TLS run differs from a plain one by what TLS costs (sealing and
//! opening records, and the records' extra bytes), not by another way of
//! doing I/O. The handshake comes before the run, on the blocking socket,
//! bounded by that socket's timeouts and a count of turns.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::wire::InBuf;

/// Turns of reading and writing a handshake may take (TLS 1.3 needs two
/// or three): past them the server is not finishing it.
const HANDSHAKE_TURNS: usize = 32;
/// Turns one `seal` or `open` may take; each takes some bytes or stops,
/// so a session that takes none cannot hold the generator in a loop.
const MAX_TURNS: usize = 4096;

/// How to reach the server over TLS: whom to trust and the name its
/// certificate must carry.
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// Trusts the CA certificates of the PEM file `ca` (`herd certs`'
    /// `ca.pem`) and expects a certificate naming the host of `addr`
    /// (HOST:PORT: an IP address or a DNS name).
    pub fn new(ca: &Path, addr: &str) -> Result<Client> {
        let pem =
            std::fs::read(ca).with_context(|| format!("reading --tls-ca {}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.with_context(|| format!("--tls-ca {}: not valid PEM", ca.display()))?;
            roots.add(cert).with_context(|| {
                format!("--tls-ca {}: a certificate rustls refuses", ca.display())
            })?;
        }
        if roots.is_empty() {
            bail!("--tls-ca {} holds no PEM certificate", ca.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host)
            .map_err(|e| anyhow!("--addr {addr}: {host:?} cannot name a TLS server ({e})"))?
            .to_owned();
        Ok(Client {
            config: Arc::new(config),
            name,
        })
    }

    /// Makes a session and completes its handshake on `stream`, which is
    /// blocking: each turn is bounded by the stream's timeouts.
    pub fn handshake(&self, stream: &mut TcpStream) -> Result<ClientConnection> {
        let mut conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| anyhow!("TLS session: {e}"))?;
        for _ in 0..HANDSHAKE_TURNS {
            if !conn.is_handshaking() {
                // The client's last flight, if `complete_io` left it.
                for _ in 0..HANDSHAKE_TURNS {
                    if !conn.wants_write() {
                        return Ok(conn);
                    }
                    conn.write_tls(stream).context("TLS handshake")?;
                }
                bail!("TLS handshake: the last flight was not written");
            }
            conn.complete_io(stream).context("TLS handshake")?;
        }
        bail!("TLS handshake not finished after {HANDSHAKE_TURNS} turns")
    }
}

/// Whether the records opened left the session open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Still open (replies, if any, are in `plain_in`).
    Open,
    /// The server closed the session (close_notify).
    Closed,
}

/// One connection's TLS session and its plaintext.
pub struct Tls {
    conn: ClientConnection,
    /// Replies opened from the records received, not yet framed.
    plain_in: InBuf,
    /// Requests queued, sealed into records by `seal`.
    plain_out: Vec<u8>,
}

impl Tls {
    /// Takes over a session whose handshake is done; replies are opened
    /// into a buffer of `inbuf` bytes (grown for large replies).
    pub fn new(conn: ClientConnection, inbuf: usize) -> Tls {
        Tls {
            conn,
            plain_in: InBuf::new(inbuf),
            plain_out: Vec::with_capacity(4096),
        }
    }

    /// Where requests are queued (plaintext).
    pub fn plain_out(&mut self) -> &mut Vec<u8> {
        &mut self.plain_out
    }

    /// Replies opened and not yet consumed (plaintext).
    pub fn plain_in(&mut self) -> &mut InBuf {
        &mut self.plain_in
    }

    /// True while requests are queued and not yet sealed.
    pub fn has_plain_out(&self) -> bool {
        !self.plain_out.is_empty()
    }

    /// Seals the queued requests, and anything else the session has to
    /// say, into records appended to `records`.
    pub fn seal(&mut self, records: &mut Vec<u8>) -> io::Result<()> {
        let mut sealed = 0;
        for _ in 0..MAX_TURNS {
            // The session takes as much as its buffer limit allows; what it
            // sealed is moved out before it is offered the rest.
            if sealed < self.plain_out.len() {
                let n = self.conn.writer().write(&self.plain_out[sealed..])?;
                sealed += n;
                if n == 0 && !self.conn.wants_write() {
                    break;
                }
            }
            self.take_records(records)?;
            if sealed == self.plain_out.len() {
                self.plain_out.clear();
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the TLS session takes no more requests",
        ))
    }

    /// Appends the records the session has sealed to `records`.
    fn take_records(&mut self, records: &mut Vec<u8>) -> io::Result<()> {
        // A `Vec` takes every record at once; bounded all the same, as
        // every loop of the generator is.
        for _ in 0..MAX_TURNS {
            if !self.conn.wants_write() {
                return Ok(());
            }
            self.conn.write_tls(records)?;
        }
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the TLS session seals without end",
        ))
    }

    /// Opens every complete record of `records` (consumed; a partial one
    /// waits in the session for its rest) and moves the replies into
    /// `plain_in`.
    pub fn open(&mut self, records: &mut InBuf) -> io::Result<Opened> {
        for _ in 0..MAX_TURNS {
            // Never offer an empty slice: the session would take it for
            // the end of the connection.
            if records.bytes().is_empty() {
                return Ok(Opened::Open);
            }
            let taken = self.conn.read_tls(&mut records.bytes())?;
            records.consume(taken);
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if self.take_plaintext()? == Opened::Closed {
                return Ok(Opened::Closed);
            }
            if taken == 0 {
                break;
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the TLS session takes no more records",
        ))
    }

    /// Moves what the session opened into `plain_in`.
    fn take_plaintext(&mut self) -> io::Result<Opened> {
        for _ in 0..MAX_TURNS {
            let spare = self.plain_in.spare().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "reply too large to frame")
            })?;
            match self.conn.reader().read(spare) {
                Ok(0) => return Ok(Opened::Closed),
                Ok(n) => self.plain_in.filled(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Opened::Open),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the TLS session opens without end",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection};

    /// A CA file, a client trusting it, and a server session whose
    /// certificate it signed for 127.0.0.1.
    fn pair(dir: &Path) -> (Client, ServerConnection) {
        let pki =
            herd::process::certs::make_pki_with_hosts(&[("S", vec!["127.0.0.1".into()])]).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let client = Client::new(&ca, "127.0.0.1:1").unwrap();
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut pki.servers[0].cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut pki.servers[0].key_pem.as_bytes())
                .unwrap()
                .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        (client, ServerConnection::new(Arc::new(config)).unwrap())
    }

    /// Moves records between the two sessions until neither has any.
    fn shuttle(client: &mut ClientConnection, server: &mut ServerConnection) {
        for _ in 0..16 {
            let mut bytes = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut bytes).unwrap();
            }
            let moved = !bytes.is_empty();
            if moved {
                server.read_tls(&mut &bytes[..]).unwrap();
                server.process_new_packets().unwrap();
            }
            bytes.clear();
            while server.wants_write() {
                server.write_tls(&mut bytes).unwrap();
            }
            if !bytes.is_empty() {
                client.read_tls(&mut &bytes[..]).unwrap();
                client.process_new_packets().unwrap();
            } else if !moved {
                return;
            }
        }
    }

    #[test]
    fn requests_are_sealed_and_replies_opened_one_byte_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut server) = pair(dir.path());
        let mut conn = ClientConnection::new(client.config.clone(), client.name.clone()).unwrap();
        shuttle(&mut conn, &mut server);
        assert!(!conn.is_handshaking() && !server.is_handshaking());
        // What herd's client TLS (the same defaults) and this client agree
        // on, as the bench's README says.
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
        );
        let mut tls = Tls::new(conn, 1024);
        tls.plain_out().extend_from_slice(b"IAMAT a +1+2 3\n");
        assert!(tls.has_plain_out());
        let mut records = Vec::new();
        tls.seal(&mut records).unwrap();
        assert!(!tls.has_plain_out());
        server.read_tls(&mut &records[..]).unwrap();
        server.process_new_packets().unwrap();
        let mut got = [0u8; 64];
        let n = server.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"IAMAT a +1+2 3\n");
        server.writer().write_all(b"AT S +0.1 a +1+2 3\n").unwrap();
        let mut sent = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut sent).unwrap();
        }
        // Records arriving a byte at a time open only once complete.
        let mut records = InBuf::new(1024);
        for byte in &sent {
            records.spare().unwrap()[0] = *byte;
            records.filled(1);
            assert_eq!(tls.open(&mut records).unwrap(), Opened::Open);
            assert!(records.bytes().is_empty());
        }
        assert_eq!(tls.plain_in().bytes(), b"AT S +0.1 a +1+2 3\n");
        server.send_close_notify();
        let mut sent = Vec::new();
        server.write_tls(&mut sent).unwrap();
        let mut records = InBuf::new(1024);
        records.spare().unwrap()[..sent.len()].copy_from_slice(&sent);
        records.filled(sent.len());
        assert_eq!(tls.open(&mut records).unwrap(), Opened::Closed);
    }

    #[test]
    fn records_that_are_not_tls_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut server) = pair(dir.path());
        let mut conn = ClientConnection::new(client.config.clone(), client.name.clone()).unwrap();
        shuttle(&mut conn, &mut server);
        let mut tls = Tls::new(conn, 1024);
        let mut records = InBuf::new(1024);
        let junk = b"AT S +0.1 a +1+2 3\n";
        records.spare().unwrap()[..junk.len()].copy_from_slice(junk);
        records.filled(junk.len());
        assert!(tls.open(&mut records).is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_or_a_bad_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let said = Client::new(&empty, "127.0.0.1:1")
            .err()
            .unwrap()
            .to_string();
        assert!(said.contains("holds no PEM certificate"), "{said}");
        let pki = herd::process::certs::make_pki(&["S"]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        assert!(Client::new(&ca, "bad host!:1").is_err());
        assert!(Client::new(&ca, "localhost:1").is_ok());
    }
}
