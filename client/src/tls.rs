//! The client's side of LXD's TLS, kept where lxc keeps it in its config directory:
//! `client.crt`/`client.key` (made on first use, the key 0600) presented to every HTTPS
//! remote, and `servercerts/<remote>.crt`, the certificate a remote showed when it was
//! added, pinned from then on (the system CAs when none is stored).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use hutch_tls::{Identity, Kind, ServerTrust};

use crate::config;
use crate::http::{Client, Https};

/// `$HUTCH_CONF` (else ~/.config/hutch): the config file's directory.
pub fn conf_dir() -> PathBuf {
    let p = config::path();
    p.parent().map(PathBuf::from).unwrap_or_default()
}

fn client_cert_path() -> PathBuf {
    conf_dir().join("client.crt")
}

/// Whether the client certificate exists yet (lxc says when it makes one).
pub fn has_identity() -> bool {
    client_cert_path().exists()
}

/// The client certificate, made on first use.
pub fn identity() -> Result<Identity> {
    let dir = conf_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(Identity::load_or_create(
        &dir.join("client.crt"),
        &dir.join("client.key"),
        Kind::Client,
    )?)
}

/// `servercerts/<remote>.crt`.
pub fn server_cert_path(remote: &str) -> PathBuf {
    conf_dir().join("servercerts").join(format!("{remote}.crt"))
}

/// The stored certificate of `remote` (DER), if any.
pub fn stored_server_cert(remote: &str) -> Result<Option<Vec<u8>>> {
    let p = server_cert_path(remote);
    match std::fs::read_to_string(&p) {
        Ok(pem) => Ok(Some(
            hutch_tls::cert_der_of_pem(&pem).with_context(|| format!("read {}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

/// Stores `der` as the certificate of `remote` (PEM, as lxc writes it).
pub fn store_server_cert(remote: &str, der: &[u8]) -> Result<()> {
    let p = server_cert_path(remote);
    let dir = p.parent().expect("servercerts dir");
    std::fs::create_dir_all(dir)
        .map_err(|_| anyhow::anyhow!("Could not create server cert dir"))?;
    hutch_tls::write_atomic(&p, hutch_tls::pem_of_der(der).as_bytes(), 0o644)
        .with_context(|| format!("Could not write server cert file \"{}\"", p.display()))
}

/// Moves or drops a remote's stored certificate with the remote (`remote rename/remove`).
pub fn rename_server_cert(old: &str, new: Option<&str>) {
    let from = server_cert_path(old);
    let _ = match new {
        Some(n) => std::fs::rename(&from, server_cert_path(n)),
        None => std::fs::remove_file(&from),
    };
}

/// A client for the HTTPS remote `name` at `url`: its stored certificate pinned, else the
/// system CAs; the client certificate presented unless the remote is public.
pub fn client_for(name: &str, url: &str, public: bool) -> Result<Client> {
    let trust = match stored_server_cert(name)? {
        Some(der) => ServerTrust::Pinned(der),
        None => ServerTrust::System,
    };
    client_with(url, trust, !public)
}

/// A client for `url` that trusts `trust`, presenting the client certificate when asked.
pub fn client_with(url: &str, trust: ServerTrust, present_identity: bool) -> Result<Client> {
    let id = if present_identity {
        Some(identity()?)
    } else {
        None
    };
    let tls = hutch_tls::client_config(trust, id.as_ref())?;
    Ok(Client::https(Https::new(url, tls)?))
}

/// The certificate `url` shows, whoever signed it (lxc's GetRemoteCertificate): DER.
pub fn remote_certificate(url: &str) -> Result<Vec<u8>> {
    let seen = Arc::new(Mutex::new(None));
    let client = client_with(url, ServerTrust::Record(seen.clone()), false)?;
    client.connect()?;
    let der = seen.lock().expect("lock").take();
    der.ok_or_else(|| anyhow::anyhow!("{url} showed no certificate"))
}
