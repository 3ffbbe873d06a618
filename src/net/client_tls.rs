//! TLS for clients (`client_tls_listen`): the same client protocol inside
//! TLS 1.2 or 1.3, with the certificate of `client_tls` (say, from a public
//! CA) or else the server's own from `tls` (`herd certs`).
//!
//! Owns loading the certificate and key (once, at start, with errors that
//! name the file) and the handshake of an accepted connection. Clients show
//! no certificate: they prove who they are with `AUTH`. No deadline here:
//! the caller's socket timeouts bound a handshake.

use std::io;
use std::path::Path;
use std::sync::Arc;

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::TlsAcceptor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// A server's TLS for clients, loaded once at start.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// Why the files could not be used; names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientTlsError(String);

impl ClientTls {
    /// Loads the certificate chain at `cert` and its key at `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<ClientTls, ClientTlsError> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                ClientTlsError(format!(
                    "client TLS {what} {}: cannot read it: {e}",
                    path.display()
                ))
            })
        };
        let cert_pem = read("certificate", cert)?;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| {
                ClientTlsError(format!(
                    "client TLS certificate {}: not valid PEM: {e}",
                    cert.display()
                ))
            })?;
        if chain.is_empty() {
            return Err(ClientTlsError(format!(
                "client TLS certificate {}: holds no PEM certificate",
                cert.display()
            )));
        }
        let key_pem = read("key", key)?;
        let private: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| {
                ClientTlsError(format!(
                    "client TLS key {}: not valid PEM: {e}",
                    key.display()
                ))
            })?
            .ok_or_else(|| {
                ClientTlsError(format!(
                    "client TLS key {}: holds no PEM private key",
                    key.display()
                ))
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // TLS 1.2 too: phones and their libraries are not all new.
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientTlsError(format!("client TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                ClientTlsError(format!(
                    "client TLS key {} does not go with the certificate {} ({e})",
                    key.display(),
                    cert.display()
                ))
            })?;
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// The handshake of an accepted client connection.
    pub async fn accept<S>(&self, stream: S) -> io::Result<futures_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        TlsAcceptor::from(Arc::clone(&self.config))
            .accept(stream)
            .await
    }
}
