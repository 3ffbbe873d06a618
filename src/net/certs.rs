//! `herd certs`: makes a herd's link certificates (a CA, and a certificate
//! and key per server) with rcgen, writes them with private keys kept
//! private, and says what to put in the config.
//!
//! Separate from [`crate::net::link::tls`], which only loads the files and
//! speaks TLS on links: generating certificates is an operator's one-off
//! step, not part of serving, so the runtime's TLS code does not carry it.
//! The name each certificate carries is [`crate::pure::cert_names::dns_name_for`]'s, the
//! one the link handshake checks.

use std::io;
use std::path::{Path, PathBuf};

use crate::pure::cert_names::dns_name_for;

/// Why a herd's certificates could not be made or written; the message
/// names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CertsError(String);

/// One server's certificate and key, PEM.
pub struct ServerPki {
    /// The server's herd name.
    pub name: String,
    /// Its certificate, signed by the herd CA.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A herd's certificates: a CA and one certificate per server, PEM.
pub struct HerdPki {
    /// The CA certificate every server trusts.
    pub ca_pem: String,
    /// The CA's private key (to sign certificates for servers added later
    /// by hand; servers never need it).
    pub ca_key_pem: String,
    /// One per server, in the order asked for.
    pub servers: Vec<ServerPki>,
}

/// Makes a fresh CA and, for each of `names`, a certificate for client and
/// server use that names it (see the module doc) and is signed by the CA.
/// Valid from the start of last year (for clocks behind) for ten years.
pub fn make_pki(names: &[&str]) -> Result<HerdPki, rcgen::Error> {
    let servers: Vec<(&str, Vec<String>)> = names.iter().map(|n| (*n, Vec::new())).collect();
    make_pki_with_hosts(&servers)
}

/// Like [`make_pki`], each certificate also naming the hosts given with its
/// server (IP addresses or DNS names), so that clients over TLS
/// (`client_tls_listen`) can check the name they connected to.
pub fn make_pki_with_hosts(servers: &[(&str, Vec<String>)]) -> Result<HerdPki, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    // Whole years are precise enough for a validity window.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    let validity = |params: &mut CertificateParams| {
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    // Constrained(0): the CA signs server certificates only, no sub-CAs.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "herd link CA");
    validity(&mut ca_params);
    let ca = ca_params.self_signed(&ca_key)?;
    let mut made = Vec::with_capacity(servers.len());
    for (name, hosts) in servers {
        let name = *name;
        let key = KeyPair::generate()?;
        let mut names = vec![dns_name_for(name)];
        names.extend(hosts.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every server both dials (client) and accepts (server) links.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        made.push(ServerPki {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        });
    }
    Ok(HerdPki {
        ca_pem: ca.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        servers: made,
    })
}

/// Makes a herd's certificates for `names` and writes them into `dir`
/// (created if missing): `ca.pem`, `ca-key.pem`, and `<name>.pem`,
/// `<name>-key.pem` per server; keys with mode 0600. Refuses, before writing
/// anything, if a file exists, unless `force`. Returns the files written.
pub fn write_herd_certs(
    names: &[&str],
    dir: &Path,
    force: bool,
) -> Result<Vec<PathBuf>, CertsError> {
    let servers: Vec<(&str, Vec<String>)> = names.iter().map(|n| (*n, Vec::new())).collect();
    write_herd_certs_with_hosts(&servers, dir, force)
}

/// Like [`write_herd_certs`], each certificate also naming its server's
/// hosts (see [`make_pki_with_hosts`]).
pub fn write_herd_certs_with_hosts(
    servers: &[(&str, Vec<String>)],
    dir: &Path,
    force: bool,
) -> Result<Vec<PathBuf>, CertsError> {
    if let Some((bad, _)) = servers
        .iter()
        .find(|(n, _)| !crate::pure::config::name_ok(n) || n.contains('/'))
    {
        return Err(CertsError(format!(
            "server name {bad:?} cannot be a file name; rename the server"
        )));
    }
    let pki = make_pki_with_hosts(servers)
        .map_err(|e| CertsError(format!("making certificates: {e}")))?;
    // (file, contents, secret)
    let mut files = vec![
        (dir.join("ca.pem"), &pki.ca_pem, false),
        (dir.join("ca-key.pem"), &pki.ca_key_pem, true),
    ];
    for server in &pki.servers {
        files.push((
            dir.join(format!("{}.pem", server.name)),
            &server.cert_pem,
            false,
        ));
        files.push((
            dir.join(format!("{}-key.pem", server.name)),
            &server.key_pem,
            true,
        ));
    }
    if !force {
        let existing: Vec<String> = files
            .iter()
            .filter(|(path, _, _)| path.symlink_metadata().is_ok())
            .map(|(path, _, _)| path.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(CertsError(format!(
                "{} already exist{}; nothing was written. Pass --force to replace them (every \
                 server then needs the new files), or choose another --out",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            )));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CertsError(format!("cannot make directory {}: {e}", dir.display())))?;
    let mut written = Vec::with_capacity(files.len());
    for (path, contents, secret) in files {
        write_new(&path, contents, if secret { 0o600 } else { 0o644 })
            .map_err(|e| CertsError(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `contents` to a new file at `path` with `mode`, replacing any file
/// there: removing it first means the mode is set at creation, so a key is
/// never readable by others, not even for a moment, whatever the old file's
/// mode was.
fn write_new(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// The `tls` section that points a config in `config_dir` at files written
/// into `out` by [`write_herd_certs`], as one line of JSON.
pub fn tls_section(config_dir: &Path, out: &Path) -> String {
    let base = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (config_dir, out) = (base(config_dir), base(out));
    let dir = match out.strip_prefix(&config_dir) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => out,
    };
    let file = |name: &str| {
        let path = dir.join(name);
        // JSON string quoting (file names are shown as text).
        serde_json::Value::String(path.display().to_string()).to_string()
    };
    format!(
        "\"tls\": {{\"ca\": {}, \"cert\": {}, \"key\": {}}}",
        file("ca.pem"),
        file("{name}.pem"),
        file("{name}-key.pem")
    )
}

#[cfg(test)]
mod tests {
    // A test that cannot go on should stop loudly.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn herd_certs_refuses_to_overwrite_and_keeps_keys_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let written = write_herd_certs(&["Goloman", "Hands"], &out, false).unwrap();
        assert_eq!(written.len(), 6);
        for path in &written {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            if path.to_string_lossy().ends_with("-key.pem") {
                assert_eq!(mode, 0o600, "{}", path.display());
            } else {
                // Certificates are public; the umask may narrow 0644.
                assert_eq!(mode & 0o600, 0o600, "{}", path.display());
            }
        }
        let before = std::fs::read(out.join("ca.pem")).unwrap();
        let err = write_herd_certs(&["Goloman", "Hands"], &out, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), before);
        write_herd_certs(&["Goloman", "Hands"], &out, true).unwrap();
        assert_ne!(std::fs::read(out.join("ca.pem")).unwrap(), before);
        assert!(write_herd_certs(&["a/b"], &out, true).is_err());
    }

    #[test]
    fn the_tls_section_is_relative_to_the_config_when_it_can_be() {
        let inside = tls_section(Path::new("/srv/herd"), Path::new("/srv/herd/certs"));
        assert_eq!(
            inside,
            r#""tls": {"ca": "certs/ca.pem", "cert": "certs/{name}.pem", "key": "certs/{name}-key.pem"}"#
        );
        let outside = tls_section(Path::new("/srv/herd"), Path::new("/etc/herd"));
        assert!(outside.contains(r#""ca": "/etc/herd/ca.pem""#), "{outside}");
    }
}
