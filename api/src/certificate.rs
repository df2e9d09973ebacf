//! `/1.0/certificates`: the trust store of client certificates, and the add tokens that
//! let a client put its own certificate there.

use serde::{Deserialize, Serialize};

/// What a trusted certificate may do: `client` the API, `metrics` only `/1.0/metrics`.
pub const CERTIFICATE_TYPES: &[&str] = &["client", "server", "metrics"];

/// The writable part of a certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificatePut {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Read-only access (hutch has one project: the certificate's projects are not used).
    #[serde(default)]
    pub restricted: bool,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub projects: Vec<String>,
    /// PEM (in GET) or base64 DER without armour (how POST and PUT carry it).
    #[serde(default)]
    pub certificate: String,
}

/// A trusted certificate as `GET /1.0/certificates/<fingerprint>` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    #[serde(flatten)]
    pub put: CertificatePut,
    pub fingerprint: String,
}

/// `POST /1.0/certificates`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificatesPost {
    #[serde(flatten)]
    pub put: CertificatePut,
    /// The trust password, or an add token (base64 JSON [`CertificateAddToken`]).
    #[serde(default)]
    pub password: String,
    /// Ask for an add token instead of adding a certificate.
    #[serde(default)]
    pub token: bool,
}

/// What `lxc config trust add` prints and `lxc remote add` takes: base64 of this JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateAddToken {
    pub client_name: String,
    pub fingerprint: String,
    pub addresses: Vec<String>,
    pub secret: String,
    /// RFC 3339; Go's zero time when the token does not expire.
    #[serde(default = "zero_time")]
    pub expires_at: String,
}

/// Go's zero `time.Time` as JSON.
pub fn zero_time() -> String {
    "0001-01-01T00:00:00Z".into()
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_takes_lxc_shapes() {
        let p: CertificatesPost = serde_json::from_str(
            r#"{"name":"x","type":"client","restricted":false,"projects":null,"certificate":"","password":"","token":true}"#,
        )
        .unwrap();
        assert!(p.token);
        assert_eq!(p.put.name, "x");
        assert!(p.put.projects.is_empty());
        let p: CertificatesPost = serde_json::from_str(r#"{"password":"pw"}"#).unwrap();
        assert_eq!((p.password.as_str(), p.put.kind.as_str()), ("pw", ""));
    }

    #[test]
    fn certificate_shows_flat_fields() {
        let c = Certificate {
            put: CertificatePut {
                name: "n".into(),
                kind: "client".into(),
                ..Default::default()
            },
            fingerprint: "ab".into(),
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["type"], "client");
        assert_eq!(v["fingerprint"], "ab");
        assert_eq!(v["projects"], serde_json::json!([]));
    }
}
