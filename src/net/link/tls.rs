//! Optional TLS on links: mutual TLS 1.3 between the servers of a herd, with
//! certificates of the herd's own CA (`herd certs` makes them).
//!
//! Owns loading the PEM files (once, at start, with errors that name the file
//! and the fix), the rustls configs of both ends, the handshake of a dialled
//! link ([`connect`], which checks the neighbour's certificate is for the
//! neighbour's name) and of an accepted one ([`accept`], which returns the
//! herd names in the dialler's certificate so that the caller can hold the
//! later `PEER <name>` line to them). It must not know about the link
//! protocol, deadlines or the store: callers bound a handshake with their
//! own timeout. Nor does it make certificates: that is `herd certs`'s job,
//! in [`crate::net::certs`], which serving never calls.
//!
//! Names in certificates: a herd name may hold characters that a DNS name may
//! not (any printable ASCII), and DNS names compare without case while herd
//! names do not, so a certificate carries the name as one DNS subject alt
//! name, `<hex of the name's bytes>.herd.invalid` (lowercase hex, in labels of
//! at most 32 digits; see [`crate::pure::cert_names`]). The encoding is one-to-one and
//! has no letters whose case matters, so webpki's own name check (used by the
//! dialler) is exact; `.invalid` (RFC 6761) can never be a real host, so a
//! herd certificate is never mistaken for a web one. The readable name is in
//! the subject's common name, for people only: nothing checks it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::pure::cert_names::{dns_name_for, herd_name_of};
use crate::pure::config::TlsPaths;

/// The ALPN protocol both ends of a link name, so that a herd certificate
/// cannot be used to talk some other protocol over a link, or the reverse.
pub const ALPN: &[u8] = b"herd-link/1";

/// Why the TLS files could not be used; the message names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkTlsError(String);

/// A server's link TLS, loaded once at start: both ends' rustls configs.
#[derive(Clone)]
pub struct LinkTls {
    /// This server's herd name (its certificate is for it).
    name: String,
    /// Dialling: trusts only the herd CA, presents this server's certificate.
    client: Arc<ClientConfig>,
    /// Accepting: requires a client certificate of the herd CA.
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The CA certificates of `tls.ca`.
fn roots(ca_path: &Path) -> Result<Arc<RootCertStore>, LinkTlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs("ca", ca_path)? {
        roots.add(ca).map_err(|e| {
            LinkTlsError(format!(
                "tls.ca {}: not a usable CA certificate: {e}",
                ca_path.display()
            ))
        })?;
    }
    Ok(Arc::new(roots))
}

/// The private key of `tls.key`.
fn private_key(key_path: &Path) -> Result<PrivateKeyDer<'static>, LinkTlsError> {
    let key_pem = read("key", key_path)?;
    match rustls_pemfile::private_key(&mut &key_pem[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(LinkTlsError(format!(
            "tls.key {}: holds no PEM private key (\"-----BEGIN PRIVATE KEY-----\"); is \
             it the right file?",
            key_path.display()
        ))),
        Err(e) => Err(LinkTlsError(format!(
            "tls.key {}: not valid PEM: {e}",
            key_path.display()
        ))),
    }
}

/// Checks at start-up what every handshake would find later: that `chain`
/// is signed by the CA and names this server `me`. Returns the verifier of
/// the neighbours' certificates.
fn check_cert(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    paths: &TlsPaths,
    me: &str,
) -> Result<Arc<dyn ClientCertVerifier>, LinkTlsError> {
    let (ca_path, cert_path) = (&paths.ca, &paths.cert);
    let (end_entity, intermediates) = match chain.split_first() {
        Some(split) => split,
        // `certs` returns at least one certificate.
        None => {
            return Err(LinkTlsError(format!(
                "tls.cert {}: empty",
                cert_path.display()
            )))
        }
    };
    let not_signed = |e: rustls::Error| {
        LinkTlsError(format!(
            "tls.cert {} is not a valid certificate of the CA in tls.ca {} ({e}); use the \
             files of one `herd certs` run, and run it again if they have expired",
            cert_path.display(),
            ca_path.display()
        ))
    };
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider())
            .build()
            .map_err(|e| LinkTlsError(format!("tls.ca {}: {e}", ca_path.display())))?;
    let now = UnixTime::now();
    client_verifier
        .verify_client_cert(end_entity, intermediates, now)
        .map_err(not_signed)?;
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::clone(roots), provider())
            .build()
            .map_err(|e| LinkTlsError(format!("tls.ca {}: {e}", ca_path.display())))?;
    let own_name = server_name(me).map_err(|e| LinkTlsError(format!("server name {me:?}: {e}")))?;
    if let Err(e) =
        server_verifier.verify_server_cert(end_entity, intermediates, &own_name, &[], now)
    {
        return Err(LinkTlsError(format!(
            "tls.cert {} is for {:?}, not for this server {me} ({e}); check that tls.cert \
             has {{name}} where the server's name goes",
            cert_path.display(),
            herd_names(end_entity)
        )));
    }
    Ok(client_verifier)
}

/// Reads a file for the `tls` field `field`, or says which and how to fix it.
fn read(field: &str, path: &Path) -> Result<Vec<u8>, LinkTlsError> {
    std::fs::read(path).map_err(|e| {
        LinkTlsError(format!(
            "tls.{field} {}: cannot read it: {e}; make the herd's files with \
             `herd certs --config FILE --out DIR` and point the config's tls section at them",
            path.display()
        ))
    })
}

/// Every PEM certificate in the file of field `field`; at least one.
fn certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkTlsError> {
    let pem = read(field, path)?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            LinkTlsError(format!(
                "tls.{field} {}: not valid PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(LinkTlsError(format!(
            "tls.{field} {}: holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"); is it \
             the right file?",
            path.display()
        )));
    }
    Ok(certs)
}

/// The herd names in a certificate (its DNS names made by [`dns_name_for`]).
pub fn herd_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(cert) => cert.valid_dns_names().filter_map(herd_name_of).collect(),
        // A certificate webpki cannot parse names nobody.
        Err(_) => Vec::new(),
    }
}

/// The crypto every link uses: ring, as for the Places client.
fn provider() -> Arc<CryptoProvider> {
    // An explicit provider: no dependence on a process-wide default.
    Arc::new(rustls::crypto::ring::default_provider())
}

impl LinkTls {
    /// Loads the CA, certificate and key of server `me` and checks that they
    /// fit together: the key is the certificate's, the CA signed the
    /// certificate, and the certificate is for `me`.
    pub fn load(paths: &TlsPaths, me: &str) -> Result<LinkTls, LinkTlsError> {
        let (cert_path, key_path) = (&paths.cert, &paths.key);
        let roots = roots(&paths.ca)?;
        let chain = certs("cert", cert_path)?;
        let key = private_key(key_path)?;
        let client_verifier = check_cert(&roots, &chain, paths, me)?;
        let mismatch = |e: rustls::Error| {
            LinkTlsError(format!(
                "tls.key {} does not go with the certificate in tls.cert {} ({e}); use the key \
                 that was made with that certificate",
                key_path.display(),
                cert_path.display()
            ))
        };
        // Links are long-lived, so resumption would save little; without it
        // every link is checked in full against the files loaded now.
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| LinkTlsError(format!("TLS setup: {e}")))?
            .with_root_certificates(Arc::clone(&roots))
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = Resumption::disabled();
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| LinkTlsError(format!("TLS setup: {e}")))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key)
            .map_err(mismatch)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(LinkTls {
            name: me.to_owned(),
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// This server's herd name, which its certificate is for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dialling config: trusts only the herd CA, presents this server's
    /// certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }

    /// The accepting config: requires a client certificate of the herd CA.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }
}

/// The name a dialler asks for when it dials herd server `name`.
fn server_name(name: &str) -> io::Result<ServerName<'static>> {
    if !crate::pure::config::name_ok(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a herd server name"),
        ));
    }
    ServerName::try_from(dns_name_for(name)).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no certificate name for {name:?}: {e}"),
        )
    })
}

/// TLS handshake on a link this server dialled to `neighbour`: the
/// neighbour's certificate must be signed by the herd CA and be for
/// `neighbour`; this server presents its own. No deadline: the caller bounds
/// it. (In TLS 1.3 the acceptor checks our certificate after this returns; a
/// refusal shows as an error or end of stream on the first read.)
pub async fn connect<S>(
    tls: &LinkTls,
    stream: S,
    neighbour: &str,
) -> io::Result<futures_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = server_name(neighbour)?;
    TlsConnector::from(tls.client_config())
        .connect(name, stream)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS with {neighbour}: {e}")))
}

/// TLS handshake on a link a neighbour dialled: its certificate must be
/// signed by the herd CA. Returns the stream and the herd names in the
/// dialler's certificate (at least one), which the caller holds the later
/// `PEER <name>` line to. No deadline: the caller bounds it.
pub async fn accept<S>(
    tls: &LinkTls,
    stream: S,
) -> io::Result<(futures_rustls::server::TlsStream<S>, Vec<String>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stream = TlsAcceptor::from(tls.server_config())
        .accept(stream)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS with a dialler: {e}")))?;
    // The verifier required a certificate, so one is there; an empty list
    // still ends in the refusal below rather than a panic.
    let names = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(herd_names)
        .unwrap_or_default();
    if names.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "TLS with a dialler: its certificate names no herd server",
        ));
    }
    Ok((stream, names))
}

#[cfg(test)]
mod tests {
    // A test that cannot go on should stop loudly.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::net::certs::{make_pki, HerdPki, ServerPki};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::{TcpListener, TcpStream};

    /// Writes `pki`'s CA and the files of server `index` into `dir` (under
    /// `prefix`) and returns their paths.
    fn files(dir: &Path, prefix: &str, ca_pem: &str, server: &ServerPki) -> TlsPaths {
        let paths = TlsPaths {
            ca: dir.join(format!("{prefix}ca.pem")),
            cert: dir.join(format!("{prefix}{}.pem", server.name)),
            key: dir.join(format!("{prefix}{}-key.pem", server.name)),
        };
        std::fs::write(&paths.ca, ca_pem).unwrap();
        std::fs::write(&paths.cert, &server.cert_pem).unwrap();
        std::fs::write(&paths.key, &server.key_pem).unwrap();
        paths
    }

    /// Loads server `index` of `pki` through real files.
    fn load(pki: &HerdPki, index: usize) -> LinkTls {
        let dir = tempfile::tempdir().unwrap();
        let server = &pki.servers[index];
        LinkTls::load(&files(dir.path(), "", &pki.ca_pem, server), &server.name).unwrap()
    }

    /// Runs `f` on a fresh glommio executor and returns its result.
    fn on_executor<T: Send + 'static, F>(f: impl FnOnce() -> F + Send + 'static) -> T
    where
        F: std::future::Future<Output = T> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// What each end of one handshake over real TCP on loopback saw: the
    /// dialler's result (after a first read, where a TLS 1.3 client learns of
    /// a refusal) and the acceptor's (the names, and a line it read).
    struct Outcome {
        dialler: io::Result<String>,
        acceptor: io::Result<(Vec<String>, String)>,
    }

    /// Dials from `dialler` to `acceptor` (asking for `neighbour`), and on
    /// success sends a line each way.
    fn handshake(dialler: LinkTls, acceptor: LinkTls, neighbour: &'static str) -> Outcome {
        on_executor(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accepting = async {
                let stream = listener.accept().await?;
                let (mut tls, names) = accept(&acceptor, stream).await?;
                let mut line = vec![0; 6];
                tls.read_exact(&mut line).await?;
                tls.write_all(b"SINCE 0\n").await?;
                // close_notify, so the dialler's read ends cleanly.
                tls.close().await?;
                Ok((names, String::from_utf8_lossy(&line).into_owned()))
            };
            let dialling = async {
                let stream = TcpStream::connect(addr).await?;
                let mut tls = connect(&dialler, stream, neighbour).await?;
                tls.write_all(b"PEER \n").await?;
                tls.flush().await?;
                let mut answer = Vec::new();
                tls.read_to_end(&mut answer).await?;
                if answer.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
                }
                Ok(String::from_utf8_lossy(&answer).into_owned())
            };
            // Each side ends on its own (answer, refusal, or the other side's
            // close), so waiting for both cannot hang.
            // A refusing acceptor drops its stream, which ends the dialler's read.
            let (acceptor, dialler) = futures_lite::future::zip(accepting, dialling).await;
            Outcome { dialler, acceptor }
        })
    }

    #[test]
    fn names_map_to_dns_names_and_back_exactly() {
        let longest = "~".repeat(64);
        for name in [
            "Goloman", "goloman", "a", "12", "x.y", "-", "*", "{}%\"", &longest,
        ] {
            let dns = dns_name_for(name);
            assert!(ServerName::try_from(dns.clone()).is_ok(), "{dns}");
            assert!(dns.bytes().all(|b| !b.is_ascii_uppercase()), "{dns}");
            assert_eq!(herd_name_of(&dns).as_deref(), Some(name));
            assert_eq!(
                herd_name_of(&dns.to_ascii_uppercase()).as_deref(),
                Some(name)
            );
        }
        assert_eq!(dns_name_for("Goloman"), "476f6c6f6d616e.herd.invalid");
        assert_ne!(dns_name_for("Goloman"), dns_name_for("goloman"));
        for other in [
            "example.com",
            "herd.invalid",
            "476f6c6f6d616e.herd.invalid.com",
            "476f.6c6f6d616e.herd.invalid", // not canonical labels
            "2020.herd.invalid",            // white space is no herd name
            "zz.herd.invalid",
        ] {
            assert_eq!(herd_name_of(other), None, "{other}");
        }
    }

    #[test]
    fn mutual_tls_of_one_ca_carries_bytes_both_ways_and_names_the_dialler() {
        let pki = make_pki(&["Goloman", "Hands"]).unwrap();
        let out = handshake(load(&pki, 0), load(&pki, 1), "Hands");
        let (names, line) = out.acceptor.unwrap();
        assert_eq!(names, ["Goloman"]);
        assert_eq!(line, "PEER \n");
        assert_eq!(out.dialler.unwrap(), "SINCE 0\n");
    }

    #[test]
    fn a_dialler_refuses_a_server_certificate_of_another_ca() {
        let herd = make_pki(&["Goloman", "Hands"]).unwrap();
        let other = make_pki(&["Goloman", "Hands"]).unwrap();
        let out = handshake(load(&herd, 0), load(&other, 1), "Hands");
        let err = out.dialler.unwrap_err();
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
        assert!(out.acceptor.is_err());
    }

    #[test]
    fn an_acceptor_refuses_a_client_certificate_of_another_ca() {
        let herd = make_pki(&["Goloman", "Hands"]).unwrap();
        let other = make_pki(&["Goloman", "Hands"]).unwrap();
        // The dialler trusts the acceptor's CA but presents a certificate of
        // another: a dialler made of files from two runs.
        let dir = tempfile::tempdir().unwrap();
        let mut paths = files(dir.path(), "", &herd.ca_pem, &herd.servers[0]);
        let foreign = files(dir.path(), "other-", &other.ca_pem, &other.servers[0]);
        paths.cert = foreign.cert;
        paths.key = foreign.key;
        let err = LinkTls::load(&paths, "Goloman").unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a valid certificate of the CA"),
            "{err}"
        );
        // So build the mixed dialler by hand: herd CA as roots, foreign cert.
        let mut roots = RootCertStore::empty();
        roots
            .add(certs("ca", &paths.ca).unwrap().remove(0))
            .unwrap();
        let chain = certs("cert", &paths.cert).unwrap();
        let key = rustls_pemfile::private_key(&mut other.servers[0].key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        client.alpn_protocols = vec![ALPN.to_vec()];
        let mut dialler = load(&herd, 0);
        dialler.client = Arc::new(client);
        let out = handshake(dialler, load(&herd, 1), "Hands");
        let err = out.acceptor.unwrap_err();
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
        assert!(out.dialler.is_err(), "the dialler hears of the refusal");
    }

    #[test]
    fn a_dialler_refuses_a_certificate_for_another_name() {
        let pki = make_pki(&["Goloman", "Hands", "Welsh"]).unwrap();
        // Dialling Welsh, the answer comes from Hands (a wrong address).
        let out = handshake(load(&pki, 0), load(&pki, 1), "Welsh");
        let err = out.dialler.unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        assert!(out.acceptor.is_err());
    }

    #[test]
    fn loading_explains_missing_and_mismatched_files() {
        let pki = make_pki(&["Goloman", "Hands"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = files(dir.path(), "", &pki.ca_pem, &pki.servers[0]);
        let hands = files(dir.path(), "", &pki.ca_pem, &pki.servers[1]);
        let err = |paths: &TlsPaths, me: &str| LinkTls::load(paths, me).unwrap_err().to_string();

        let missing = TlsPaths {
            ca: dir.path().join("nope.pem"),
            ..good.clone()
        };
        let text = err(&missing, "Goloman");
        assert!(
            text.contains("tls.ca") && text.contains("nope.pem"),
            "{text}"
        );
        assert!(text.contains("herd certs"), "{text}");

        let swapped_key = TlsPaths {
            key: hands.key.clone(),
            ..good.clone()
        };
        let text = err(&swapped_key, "Goloman");
        assert!(
            text.contains("tls.key") && text.contains("does not go with"),
            "{text}"
        );

        let text = err(&good, "Hands");
        assert!(
            text.contains("is for [\"Goloman\"], not for this server Hands"),
            "{text}"
        );

        let key_as_cert = TlsPaths {
            cert: good.key.clone(),
            ..good.clone()
        };
        let text = err(&key_as_cert, "Goloman");
        assert!(
            text.contains("tls.cert") && text.contains("no PEM certificate"),
            "{text}"
        );

        let cert_as_key = TlsPaths {
            key: good.cert.clone(),
            ..good.clone()
        };
        let text = err(&cert_as_key, "Goloman");
        assert!(
            text.contains("tls.key") && text.contains("no PEM private key"),
            "{text}"
        );

        assert_eq!(LinkTls::load(&good, "Goloman").unwrap().name(), "Goloman");
    }
}
