//! A registry token server on loopback, as Docker Hub's `auth.docker.io` is to its
//! registry: `docker-registry` configured with `auth: token:` (see [`TokenServer::
//! registry_config`]) sends clients here with a `WWW-Authenticate: Bearer` challenge, and
//! this answers `GET /token?service=…&scope=repository:NAME:ACTIONS` with a JWT signed
//! ES256 by a key whose certificate the registry trusts (`kid` is the key's libtrust ID).
//!
//! Policy: `public/…` repositories may be pulled by anyone (an anonymous token); the
//! user and password given at start get every action they ask for; other credentials are
//! refused with 401.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const SERVICE: &str = "hutch-test-registry";
const ISSUER: &str = "hutch-test-token-server";

/// What the server saw: requests, and those that carried the right credentials.
#[derive(Default)]
pub struct TokenCounts {
    pub requests: AtomicUsize,
    pub authenticated: AtomicUsize,
}

/// A running token server; stopped (its thread joined) when dropped.
pub struct TokenServer {
    port: u16,
    cert: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub counts: Arc<TokenCounts>,
}

impl TokenServer {
    /// Starts one on a free loopback port granting `user`:`password`; its certificate is
    /// written under `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = rcgen::KeyPair::generate().expect("token key");
        let cert = rcgen::CertificateParams::new(vec!["hutch-token".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("token certificate");
        let cert_path = dir.join("token-cert.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write the token certificate");
        let signer = Signer {
            kid: libtrust_key_id(&key.public_key_der()),
            key: EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &ring::rand::SystemRandom::new(),
            )
            .expect("signing key"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(TokenCounts::default());
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let thread = {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = answer(conn, &signer, &basic, &counts);
                    }
                }
            })
        };
        TokenServer {
            port,
            cert: cert_path,
            stop,
            thread: Some(thread),
            counts,
        }
    }

    /// The `auth:` section of a `docker-registry` config that sends clients here.
    pub fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    \
             issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.port,
            self.cert.display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Signer {
    kid: String,
    key: EcdsaKeyPair,
}

impl Signer {
    /// A JWT for `subject` with `access` (JSON), as distribution's token auth reads it.
    fn token(&self, subject: &str, access: serde_json::Value) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 600, "nbf": now - 60, "iat": now - 60,
            "jti": format!("{now}-{}", crate::unique_name("jti")),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .expect("sign");
        format!("{signing_input}.{}", b64(sig.as_ref()))
    }
}

/// libtrust's key ID (what distribution matches a token's `kid` with): the SHA-256 of the
/// DER public key, its first 240 bits in base32, in groups of four joined by colons.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(spki_der);
    let b32 = base32(&hash[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 4648 base32 of whole 5-byte groups (no padding needed).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for group in bytes.chunks(5) {
        let mut n = 0u64;
        for b in group {
            n = (n << 8) | u64::from(*b);
        }
        for i in (0..8).rev() {
            out.push(ALPHABET[((n >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

/// One HTTP request: a token, or 401.
fn answer(
    conn: TcpStream,
    signer: &Signer,
    basic: &str,
    counts: &TokenCounts,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = v.trim().to_string();
            }
        }
    }
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .collect();
    let (status, body) = if authorization.is_empty() {
        // Anonymous: pulls of public/ repositories only.
        let access = access_of(&scopes, |name, _| name.starts_with("public/"));
        (200, token_body(&signer.token("", access)))
    } else if authorization == basic {
        counts.authenticated.fetch_add(1, Ordering::SeqCst);
        let access = access_of(&scopes, |_, _| true);
        (200, token_body(&signer.token("hutch", access)))
    } else {
        (
            401,
            r#"{"details":"wrong user name or password"}"#.to_string(),
        )
    };
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn token_body(token: &str) -> String {
    serde_json::json!({"token": token, "access_token": token, "expires_in": 600}).to_string()
}

/// The access a token grants for `scopes` (`repository:NAME:ACTIONS`), each action kept
/// where `allowed(name, action)`.
fn access_of(scopes: &[String], allowed: impl Fn(&str, &str) -> bool) -> serde_json::Value {
    let mut access = Vec::new();
    for scope in scopes {
        for one in scope.split(' ') {
            let mut parts = one.splitn(3, ':');
            let (Some(kind), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| kind == "repository" && allowed(name, a))
                .collect();
            access.push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
        }
    }
    serde_json::Value::Array(access)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_and_scopes_read_as_distribution_writes_them() {
        assert_eq!(base32(b"foobar\0\0\0\0"), "MZXW6YTBOIAAAAAA");
        let id = libtrust_key_id(b"any key");
        assert_eq!(id.len(), 48 + 11);
        assert_eq!(id.split(':').count(), 12);
        assert_eq!(
            percent_decode("repository%3Apublic%2Fbb%3Apull%2Cpush"),
            "repository:public/bb:pull,push"
        );
        let a = access_of(&["repository:public/x:pull,push".into()], |n, a| {
            n.starts_with("public/") && a == "pull"
        });
        assert_eq!(a[0]["actions"], serde_json::json!(["pull"]));
    }
}
