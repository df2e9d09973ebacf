//! The trust store (`/1.0/certificates`): which client certificates the HTTPS listener
//! trusts, the add tokens that let a client put its own certificate there, and the trust
//! password. An in-memory copy of the store answers every request's trust check; it is
//! replaced whenever the store changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hutch_api::certificate::{
    Certificate, CertificateAddToken, CertificatePut, CertificatesPost, CERTIFICATE_TYPES,
};
use hutch_api::server_config::{expiry_seconds, server_config_value};
use serde_json::{json, Value};

use super::{blocking, check_version, Engine, Versioned};
use crate::auth::{Caller, Trust};
use crate::db::Db;
use crate::error::{DaemonError, Result};
use crate::operations::OpEntry;

/// What the trust store says of one fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trusted {
    metrics: bool,
    restricted: bool,
}

/// The trust store's fingerprints, in memory.
#[derive(Debug, Default)]
pub struct TrustCache {
    by_fingerprint: RwLock<Arc<HashMap<String, Trusted>>>,
}

impl TrustCache {
    /// The store as the database holds it.
    pub fn load(db: &Db) -> Result<TrustCache> {
        let cache = TrustCache::default();
        cache.refresh(db)?;
        Ok(cache)
    }

    pub(in crate::engine) fn refresh(&self, db: &Db) -> Result<()> {
        let map = db
            .certificates()?
            .into_iter()
            .map(|c| {
                let t = Trusted {
                    metrics: c.put.kind == "metrics",
                    restricted: c.put.restricted,
                };
                (c.fingerprint, t)
            })
            .collect();
        *self
            .by_fingerprint
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        Ok(())
    }

    fn get(&self, fingerprint: &str) -> Option<Trusted> {
        self.by_fingerprint
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(fingerprint)
            .copied()
    }
}

/// What `POST /1.0/certificates` did.
pub enum CertificateAdded {
    /// A certificate joined the store: its fingerprint.
    Certificate(String),
    /// An add token was issued: its operation.
    Token(Arc<OpEntry>),
}

fn bad(msg: &str) -> DaemonError {
    DaemonError::BadRequest(msg.into())
}

fn forbidden(msg: &str) -> DaemonError {
    DaemonError::Forbidden(msg.into())
}

/// Byte strings compared without an early exit.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A fresh token secret: 256 random bits, hex.
fn new_secret() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let c = uuid::Uuid::new_v4();
    // Each v4 UUID carries 122 random bits; three make well over 256.
    hex::encode([a.as_bytes().as_slice(), b.as_bytes(), c.as_bytes()].concat())
}

fn check_type(kind: &str) -> Result<()> {
    if CERTIFICATE_TYPES.contains(&kind) {
        Ok(())
    } else {
        Err(DaemonError::BadRequest(format!(
            "Unknown certificate type {kind:?}"
        )))
    }
}

/// The certificate text a client sent (base64 DER, or PEM), as PEM; LXD's 400 otherwise.
fn certificate_pem(text: &str) -> Result<(String, String)> {
    let der = hutch_tls::cert_der_of_text(text.trim())
        .map_err(|e| DaemonError::BadRequest(format!("Invalid certificate material: {e}")))?;
    Ok((hutch_tls::fingerprint(&der), hutch_tls::pem_of_der(&der)))
}

/// The subject's common name of a DER certificate: the last `CN` attribute of issuer and
/// subject (the subject follows the issuer), when it is a string.
fn common_name(der: &[u8]) -> Option<String> {
    const CN_OID: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    let mut found = None;
    let mut at = 0;
    while let Some(pos) = der[at..].windows(CN_OID.len()).position(|w| w == CN_OID) {
        let value = at + pos + CN_OID.len();
        // A string tag (UTF8, Printable, IA5, T61, BMP excluded) and a short length.
        if let [tag, len, rest @ ..] = &der[value..] {
            let len = *len as usize;
            if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) && len < 0x80 && rest.len() >= len {
                found = std::str::from_utf8(&rest[..len]).ok().map(str::to_string);
            }
        }
        at = value;
    }
    found
}

/// The token a client gives as its password, if it is one (`shared.CertificateTokenDecode`).
fn decode_token(password: &str) -> Option<CertificateAddToken> {
    let json = hutch_tls::base64_decode(password.trim())?;
    let t: CertificateAddToken = serde_json::from_slice(&json).ok()?;
    (!t.client_name.is_empty() && !t.addresses.is_empty() && !t.secret.is_empty()).then_some(t)
}

impl Engine {
    /// How far `caller` is trusted (the auth middleware asks on every request, so this
    /// reads the in-memory copy of the store only).
    pub fn trust(&self, caller: &Caller) -> Trust {
        let Some(fingerprint) = (match caller {
            Caller::Unix => return Trust::Admin,
            // The session was opened with a token only the socket's admin can get.
            Caller::Ui { session, .. } => {
                return if session.is_some() {
                    Trust::Admin
                } else {
                    Trust::Untrusted
                }
            }
            Caller::Tls { .. } => caller.fingerprint(),
        }) else {
            return Trust::Untrusted;
        };
        match self.d.trust.get(&fingerprint) {
            // Another member of this server's cluster (known by the certificate it
            // published in etcd).
            None if self.member_of_fingerprint(&fingerprint).is_some() => Trust::Admin,
            None => Trust::Untrusted,
            Some(t) if t.metrics => Trust::Metrics,
            Some(t) if t.restricted => Trust::ReadOnly,
            Some(_) => Trust::Admin,
        }
    }

    /// `GET /1.0/certificates?recursion=1`.
    pub fn certificates(&self) -> Result<Vec<Certificate>> {
        self.d.db.certificates()
    }

    /// `GET /1.0/certificates/<fingerprint or unique prefix>`.
    pub fn certificate(&self, prefix: &str) -> Result<Versioned<Certificate>> {
        let c = self.d.db.certificate_by_prefix(prefix)?;
        let version = serde_json::to_value(&c).unwrap_or(Value::Null);
        Ok(Versioned { object: c, version })
    }

    /// `POST /1.0/certificates`, as LXD 5.0 answers it for `caller` trusted as `trust`.
    pub async fn add_certificate(
        &self,
        mut req: CertificatesPost,
        caller: &Caller,
        trust: Trust,
    ) -> Result<CertificateAdded> {
        if req.put.kind.is_empty() {
            req.put.kind = "client".into();
        }
        if req.token && !req.put.certificate.is_empty() {
            return Err(bad("Can't use certificate if token is requested"));
        }
        let config = self.d.db.server_config()?;
        let https_address = server_config_value(&config, "core.https_address").to_string();
        if req.token {
            if req.put.kind != "client" {
                return Err(bad("Tokens can only be issued for client certificates"));
            }
            if https_address.is_empty() {
                return Err(bad(
                    "Can't issue token when server isn't listening on network",
                ));
            }
        }
        let trusted = matches!(trust, Trust::Admin | Trust::ReadOnly);
        if trusted && req.put.certificate.is_empty() && !req.token {
            return Err(bad("Client is already trusted"));
        }
        if trust != Trust::Admin {
            if req.token || req.password.is_empty() {
                return Err(forbidden("not authorized"));
            }
            match self.redeem_token(&req.password)? {
                Some(asked) => {
                    req.put = CertificatePut {
                        certificate: String::new(),
                        ..asked
                    }
                }
                None => {
                    let stored = server_config_value(&config, "core.trust_password").to_string();
                    let password = std::mem::take(&mut req.password);
                    let matches =
                        blocking(move || Ok(super::server::password_matches(&stored, &password)))
                            .await?;
                    if !matches {
                        tracing::warn!(caller = ?caller, "bad trust password");
                        return Err(forbidden("not authorized"));
                    }
                }
            }
            // The caller's own certificate is what joins the store.
            req.put.certificate = String::new();
        }
        check_type(&req.put.kind)?;
        let (fingerprint, pem) = if !req.put.certificate.is_empty() {
            certificate_pem(&req.put.certificate)?
        } else if req.token {
            return Ok(CertificateAdded::Token(
                self.issue_token(req, &https_address)?,
            ));
        } else {
            match caller {
                Caller::Tls {
                    certificate: Some(der),
                    ..
                } => (hutch_tls::fingerprint(der), hutch_tls::pem_of_der(der)),
                Caller::Tls { .. } => return Err(bad("No client certificate provided")),
                Caller::Unix | Caller::Ui { .. } => {
                    return Err(bad("Can't use TLS data on non-TLS link"))
                }
            }
        };
        // As LXD: the name given, else the certificate's common name, else the peer's IP.
        let der = hutch_tls::cert_der_of_pem(&pem).unwrap_or_default();
        let name = match (&req.put.name, common_name(&der), caller) {
            (n, _, _) if !n.is_empty() => n.clone(),
            (_, Some(cn), _) => cn,
            (_, None, Caller::Tls { address, .. }) => address.ip().to_string(),
            (_, None, Caller::Unix | Caller::Ui { .. }) => fingerprint[..12].to_string(),
        };
        let cert = Certificate {
            fingerprint: fingerprint.clone(),
            put: CertificatePut {
                name,
                certificate: pem,
                ..req.put
            },
        };
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        store
            .put_certificate(self.shared_state(), &cert, None)
            .await?;
        self.d.db.insert_certificate(&cert)?;
        self.d.trust.refresh(&self.d.db)?;
        self.d.events.lifecycle(
            "certificate-created",
            &format!("/1.0/certificates/{fingerprint}"),
            json!({}),
        );
        Ok(CertificateAdded::Certificate(fingerprint))
    }

    /// A cluster join token for member `name` (LXD's `POST /1.0/cluster/members`): a token
    /// operation whose secret, presented with the joiner's certificate to `POST
    /// /1.0/certificates`, adds that certificate as a `server` (as LXD's joins do).
    pub(in crate::engine) fn issue_join_token(&self, name: &str) -> Result<Arc<OpEntry>> {
        let config = self.d.db.server_config()?;
        let https_address = server_config_value(&config, "core.https_address");
        let request = CertificatesPost {
            put: CertificatePut {
                name: name.to_string(),
                kind: "server".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        // Three hours, LXD's cluster.join_token_expiry default.
        let at = time::OffsetDateTime::now_utc() + time::Duration::hours(3);
        let meta = json!({
            "serverName": name,
            "secret": new_secret(),
            "fingerprint": self.d.identity().fingerprint(),
            "addresses": super::server::listen_addresses(https_address),
            "expiresAt": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "request": request,
        });
        // An earlier token for the same name is cancelled, as LXD does.
        for op in self.d.ops.all() {
            let snap = op.snapshot();
            if snap.class == "token" && snap.metadata["serverName"] == name {
                self.d.ops.cancel(&op);
            }
        }
        let resources = std::collections::BTreeMap::from([("cluster".to_string(), Vec::new())]);
        Ok(self
            .d
            .ops
            .create_token_on("Executing operation", resources, meta))
    }

    /// Trusts `pem` as a `server` certificate named `name` (a cluster member's).
    pub(in crate::engine) async fn trust_member(&self, name: &str, pem: &str) -> Result<()> {
        let (fingerprint, pem) = certificate_pem(pem)?;
        if self.d.trust.get(&fingerprint).is_some() {
            return Ok(());
        }
        let cert = Certificate {
            fingerprint,
            put: CertificatePut {
                name: name.to_string(),
                kind: "server".into(),
                certificate: pem,
                ..Default::default()
            },
        };
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        store
            .put_certificate(self.shared_state(), &cert, None)
            .await?;
        self.d.db.insert_certificate(&cert)?;
        self.d.trust.refresh(&self.d.db)
    }

    /// A token operation for `req`, listing where the server listens.
    fn issue_token(&self, mut req: CertificatesPost, https_address: &str) -> Result<Arc<OpEntry>> {
        req.password = String::new();
        let config = self.d.db.server_config()?;
        let mut meta = json!({
            "secret": new_secret(),
            "fingerprint": self.d.identity().fingerprint(),
            "addresses": super::server::listen_addresses(https_address),
            "request": req,
        });
        let expiry = server_config_value(&config, "core.remote_token_expiry");
        if !expiry.is_empty() {
            let seconds = expiry_seconds(expiry).map_err(DaemonError::BadRequest)?;
            let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds as i64);
            meta["expiresAt"] = json!(at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default());
        }
        Ok(self.d.ops.create_token("Executing operation", meta))
    }

    /// When `password` is an add token (or its bare secret) of a running token operation:
    /// that operation is consumed (cancelled) and the request it was issued for returned.
    /// A token that matches nothing, or has expired, is refused; None when `password` is
    /// no token at all (a trust password).
    fn redeem_token(&self, password: &str) -> Result<Option<CertificatePut>> {
        let decoded = decode_token(password);
        let secret = decoded.as_ref().map_or(password, |t| t.secret.as_str());
        let found = self.d.ops.all().into_iter().find(|op| {
            let snap = op.snapshot();
            snap.class == "token"
                && snap.status_code == hutch_api::operation::StatusCode::Running as u16
                && snap.metadata["secret"]
                    .as_str()
                    .is_some_and(|s| same_secret(s, secret))
        });
        let Some(op) = found else {
            return match decoded {
                Some(_) => Err(forbidden("No matching certificate add operation found")),
                None => Ok(None),
            };
        };
        if !self.d.ops.cancel(&op) {
            // Another request consumed it first.
            return Err(forbidden("No matching certificate add operation found"));
        }
        let meta = op.snapshot().metadata;
        if let Some(at) = meta["expiresAt"].as_str() {
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| DaemonError::failed("read", "the token's expiry", e))?;
            if time::OffsetDateTime::now_utc() > at {
                return Err(forbidden("Token has expired"));
            }
        }
        let asked: CertificatesPost = serde_json::from_value(meta["request"].clone())
            .map_err(|e| DaemonError::failed("read", "the certificate add operation", e))?;
        Ok(Some(asked.put))
    }

    /// `PUT` (`merge` false) or `PATCH /1.0/certificates/<fingerprint>`: `changes` (a
    /// JSON object of `CertificatePut` fields) replace or update the entry; a new
    /// certificate changes its fingerprint. Returns the new fingerprint.
    pub async fn update_certificate(
        &self,
        prefix: &str,
        changes: Value,
        merge: bool,
        if_match: Option<&str>,
    ) -> Result<String> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let current = self.d.db.certificate_by_prefix(prefix)?;
        check_version(if_match, &current)?;
        let Value::Object(changes) = changes else {
            return Err(bad("Invalid JSON: expected an object"));
        };
        let mut base = if merge {
            serde_json::to_value(&current.put).unwrap_or(Value::Null)
        } else {
            json!({})
        };
        if let Value::Object(b) = &mut base {
            b.extend(changes);
        }
        let put: CertificatePut = serde_json::from_value(base)
            .map_err(|e| DaemonError::BadRequest(format!("Invalid JSON: {e}")))?;
        let kind = if put.kind.is_empty() {
            "client".to_string()
        } else {
            put.kind.clone()
        };
        check_type(&kind)?;
        let (fingerprint, pem) = if put.certificate.is_empty() {
            (current.fingerprint.clone(), current.put.certificate.clone())
        } else {
            certificate_pem(&put.certificate)?
        };
        let name = if put.name.is_empty() && merge {
            current.put.name.clone()
        } else {
            put.name.clone()
        };
        let updated = Certificate {
            fingerprint: fingerprint.clone(),
            put: CertificatePut {
                name,
                kind,
                restricted: put.restricted,
                projects: put.projects,
                certificate: pem,
            },
        };
        store
            .put_certificate(self.shared_state(), &updated, Some(&current.fingerprint))
            .await?;
        self.d
            .db
            .replace_certificate(&current.fingerprint, &updated)?;
        self.d.trust.refresh(&self.d.db)?;
        self.d.events.lifecycle(
            "certificate-updated",
            &format!("/1.0/certificates/{fingerprint}"),
            json!({}),
        );
        Ok(fingerprint)
    }

    /// `DELETE /1.0/certificates/<fingerprint>`: the certificate is no longer trusted from
    /// the next request on.
    pub async fn delete_certificate(&self, prefix: &str) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let current = self.d.db.certificate_by_prefix(prefix)?;
        store
            .delete_certificate(self.shared_state(), &current.fingerprint)
            .await?;
        self.d.db.delete_certificate(&current.fingerprint)?;
        self.d.trust.refresh(&self.d.db)?;
        self.d.events.lifecycle(
            "certificate-deleted",
            &format!("/1.0/certificates/{}", current.fingerprint),
            json!({}),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_as_lxc_encodes_them() {
        let t = CertificateAddToken {
            client_name: "x".into(),
            fingerprint: "ab".into(),
            addresses: vec!["127.0.0.1:8443".into()],
            secret: "s".into(),
            expires_at: hutch_api::certificate::zero_time(),
        };
        let text = hutch_tls::base64_encode(&serde_json::to_vec(&t).unwrap());
        assert_eq!(decode_token(&text), Some(t));
        assert_eq!(decode_token("s3cret"), None);
        assert_eq!(decode_token(&hutch_tls::base64_encode(b"{}")), None);
    }

    #[test]
    fn common_names_are_read_from_the_subject() {
        let id = hutch_tls::Identity::generate(hutch_tls::Kind::Client).unwrap();
        let cn = common_name(&id.cert_der).unwrap();
        assert!(cn.starts_with("root@"), "{cn}");
        assert_eq!(common_name(b"not a certificate"), None);
        assert_eq!(
            common_name(&[0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x09]),
            None
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert_eq!(new_secret().len(), 96);
    }
}
