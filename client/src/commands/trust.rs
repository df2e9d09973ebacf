//! `hutch config trust add|list|list-tokens|revoke-token|remove|show`, as lxc 5.0.2's
//! lxc/config_trust.go, and the certificate add token (`remote add NAME TOKEN`).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::remote::split;
use crate::http::{encode, Client};
use crate::output::{self, Format};

/// A certificate add token: base64 of this JSON (lxc's api.CertificateAddToken).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub client_name: String,
    pub fingerprint: String,
    pub addresses: Vec<String>,
    pub secret: String,
    /// RFC 3339; Go's zero time when the token does not expire.
    pub expires_at: String,
}

/// Go's zero `time.Time` as its JSON encoder writes it.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Token {
    /// The token in `text`, as lxc's CertificateTokenDecode reads one (standard base64 of
    /// JSON with a client name, addresses, a secret and a fingerprint); None otherwise.
    pub fn decode(text: &str) -> Option<Token> {
        // Go's StdEncoding: the standard alphabet, padded, nothing else.
        let standard = !text.is_empty()
            && text.len().is_multiple_of(4)
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if !standard {
            return None;
        }
        let raw = hutch_tls::base64_decode(text)?;
        let v: Value = serde_json::from_slice(&raw).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let addresses: Vec<String> = v["addresses"]
            .as_array()?
            .iter()
            .map(|a| a.as_str().map(String::from))
            .collect::<Option<_>>()?;
        let token = Token {
            client_name: s("client_name"),
            fingerprint: s("fingerprint"),
            addresses,
            secret: s("secret"),
            expires_at: match s("expires_at") {
                e if e.is_empty() => GO_ZERO_TIME.into(),
                e => e,
            },
        };
        let complete = !token.client_name.is_empty()
            && !token.addresses.is_empty()
            && !token.secret.is_empty()
            && !token.fingerprint.is_empty();
        complete.then_some(token)
    }

    /// The token of a token operation, as lxc's ToCertificateAddToken builds it from the
    /// operation's metadata.
    pub fn of_operation(op: &Value) -> Result<Token> {
        let md = &op["metadata"];
        let name = md["request"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("Failed to get client name"))?;
        let field = |k: &str| {
            md[k]
                .as_str()
                .map(String::from)
                .ok_or_else(|| anyhow!("Operation {k} is not a string"))
        };
        let addresses = md["addresses"]
            .as_array()
            .ok_or_else(|| anyhow!("Operation addresses is not a list"))?
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.as_str()
                    .map(String::from)
                    .ok_or_else(|| anyhow!("Operation address index {i} is not a string"))
            })
            .collect::<Result<_>>()?;
        Ok(Token {
            client_name: name.to_string(),
            fingerprint: field("fingerprint")?,
            addresses,
            secret: field("secret")?,
            expires_at: md["expiresAt"].as_str().unwrap_or(GO_ZERO_TIME).to_string(),
        })
    }

    /// The token as lxc prints it: base64 of its JSON, in Go's field order.
    pub fn encode(&self) -> String {
        hutch_tls::base64_encode(&serde_json::to_vec(self).expect("json"))
    }

    /// `YYYY/MM/DD HH:MM UTC` when the token expires, empty when it does not.
    fn expiry_shown(&self) -> String {
        if self.expires_at.starts_with("0001-") {
            return String::new();
        }
        let t = time::OffsetDateTime::parse(
            &self.expires_at,
            &time::format_description::well_known::Rfc3339,
        );
        match t {
            Ok(t) => {
                let t = t.to_offset(time::UtcOffset::UTC);
                format!(
                    "{:04}/{:02}/{:02} {:02}:{:02} UTC",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute()
                )
            }
            Err(_) => self.expires_at.clone(),
        }
    }
}

/// `hutch config trust ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Add new trusted client: a token to hand to the client (`[REMOTE:]`), or a
    /// certificate file (`[REMOTE:] CERT`).
    #[command(alias = "add-certificate")]
    Add {
        args: Vec<String>,
        /// Alternative certificate name.
        #[arg(long, default_value = "")]
        name: String,
        /// Type of certificate.
        #[arg(long = "type", default_value = "client")]
        kind: String,
        /// Restrict the certificate to one or more projects.
        #[arg(long)]
        restricted: bool,
        /// List of projects to restrict the certificate to.
        #[arg(long, default_value = "")]
        projects: String,
    },
    /// List trusted clients.
    #[command(visible_alias = "ls")]
    List {
        remote: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List all active certificate add tokens.
    ListTokens {
        remote: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove trusted client.
    #[command(visible_alias = "rm")]
    Remove {
        fingerprint: String,
        second: Option<String>,
    },
    /// Revoke certificate add token.
    RevokeToken { name: String },
    /// Show trust configurations.
    Show { fingerprint: String },
    /// Edit trust configurations as YAML (in $VISUAL/$EDITOR, or from stdin).
    Edit { fingerprint: String },
}

/// Runs one `hutch config trust` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Add {
            args,
            name,
            kind,
            restricted,
            projects,
        } => add(c, &args, &name, &kind, restricted, &projects),
        Cmd::List { remote, format } => {
            let (c, _) = split(c, remote.as_deref().unwrap_or(""))?;
            print!("{}", list(&c, format)?);
            Ok(())
        }
        Cmd::ListTokens { remote, format } => {
            let (c, _) = split(c, remote.as_deref().unwrap_or(""))?;
            let tokens = tokens(&c)?;
            let mut rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| vec![t.client_name.clone(), t.encode(), t.expiry_shown()])
                .collect();
            rows.sort_by(|a, b| a[0].cmp(&b[0]));
            let raw: Vec<Value> = tokens
                .iter()
                .map(|t| json!({"ClientName": t.client_name, "Token": t.encode(), "ExpiresAt": t.expiry_shown()}))
                .collect();
            let headers = ["NAME", "TOKEN", "EXPIRES AT"].map(String::from);
            print!("{}", output::render(format, &headers, &rows, &json!(raw))?);
            Ok(())
        }
        Cmd::Remove {
            fingerprint,
            second,
        } => {
            // Both lxc's legacy `REMOTE: FINGERPRINT` and `REMOTE:FINGERPRINT`.
            let (c, name) = split(c, &fingerprint)?;
            let fp = second.unwrap_or(name);
            c.request(
                "DELETE",
                &format!("/1.0/certificates/{}", encode(&fp)),
                None,
            )?;
            Ok(())
        }
        Cmd::RevokeToken { name: raw } => {
            let (c, name) = split(c, &raw)?;
            let ops = c.get("/1.0/operations?recursion=1")?;
            for op in running_tokens(&ops) {
                if Token::of_operation(op).is_ok_and(|t| t.client_name == name) {
                    let id = op["id"].as_str().unwrap_or_default();
                    c.request("DELETE", &format!("/1.0/operations/{}", encode(id)), None)?;
                    if !output::quiet() {
                        println!("Certificate add token for {name} deleted");
                    }
                    return Ok(());
                }
            }
            let (remote, _) = crate::config::ClientConfig::load()?.parse_remote(&raw)?;
            bail!("No certificate add token for member {name} on remote: {remote}")
        }
        Cmd::Show { fingerprint } => {
            let (c, fp) = split(c, &fingerprint)?;
            if fp.is_empty() {
                bail!("Missing certificate fingerprint");
            }
            let cert = c.get(&format!("/1.0/certificates/{}", encode(&fp)))?;
            print!("{}", show_yaml(&cert));
            Ok(())
        }
        Cmd::Edit { fingerprint } => {
            let (c, fp) = split(c, &fingerprint)?;
            if fp.is_empty() {
                bail!("Missing certificate fingerprint");
            }
            let url = format!("/1.0/certificates/{}", encode(&fp));
            let current = show_yaml(&c.get(&url)?);
            super::edit::edit("", &current, |text| {
                let new = super::edit::parse_yaml(text)?;
                // The writable part (api.CertificatePut); the fingerprint is not.
                let put = json!({
                    "name": new["name"], "type": new["type"],
                    "restricted": new["restricted"].as_bool().unwrap_or(false),
                    "projects": new["projects"], "certificate": new["certificate"],
                });
                c.request("PUT", &url, Some(&put))?;
                Ok(())
            })
        }
    }
}

/// `config trust add`: `[REMOTE:]` alone makes a token, `[REMOTE:] CERT` adds the file's
/// certificate.
fn add(
    c: &Client,
    args: &[String],
    name: &str,
    kind: &str,
    restricted: bool,
    projects: &str,
) -> Result<()> {
    if args.len() > 2 {
        bail!("Invalid number of arguments");
    }
    if kind != "client" && kind != "metrics" {
        bail!("Unknown certificate type {kind:?}");
    }
    // lxc 5.0.2 reads a lone argument as the certificate file, so that a token cannot
    // be made on another remote; a lone `REMOTE:` (an empty name) is that remote here.
    let remote_only = args.len() == 1 && args[0].ends_with(':') && !Path::new(&args[0]).exists();
    let (c, _) = if args.len() == 2 || remote_only {
        split(c, &args[0])?
    } else {
        (c.clone(), String::new())
    };
    let args = if remote_only { &[][..] } else { args };
    let projects: Vec<&str> = if projects.is_empty() {
        vec![]
    } else {
        projects.split(',').collect()
    };
    let mut body = json!({
        "name": name, "type": kind, "restricted": restricted,
        "projects": if projects.is_empty() { Value::Null } else { json!(projects) },
        "certificate": "", "password": "", "token": false,
    });
    if args.is_empty() {
        if kind == "metrics" {
            bail!("Cannot use metrics type certificate when using a token");
        }
        let name = if name.is_empty() {
            print!("Please provide client name: ");
            std::io::Write::flush(&mut std::io::stdout())?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        } else {
            name.to_string()
        };
        body["name"] = json!(name);
        body["token"] = json!(true);
        let env = c.request("POST", "/1.0/certificates", Some(&body))?;
        let token = Token::of_operation(&env.metadata).map_err(|e| {
            anyhow!("Failed converting token operation to certificate add token: {e:#}")
        })?;
        if !output::quiet() {
            println!("Client {name} certificate add token:");
        }
        println!("{}", token.encode());
        return Ok(());
    }
    let file = &args[args.len() - 1];
    let path = if file == "-" { "/dev/stdin" } else { file };
    let pem = std::fs::read_to_string(path).map_err(|e| anyhow!("open {file}: {e}"))?;
    let der = hutch_tls::cert_der_of_text(&pem)?;
    if name.is_empty() {
        let base = std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        body["name"] = json!(base);
    }
    body["certificate"] = json!(hutch_tls::base64_encode(&der));
    c.request("POST", "/1.0/certificates", Some(&body))?;
    Ok(())
}

/// The running token operations of `ops` (`/1.0/operations?recursion=1`, by status).
fn running_tokens(ops: &Value) -> Vec<&Value> {
    ops.as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter(|op| op["class"] == "token" && op["status_code"] == 103)
        .collect()
}

/// The active certificate add tokens of a server.
fn tokens(c: &Client) -> Result<Vec<Token>> {
    let ops = c.get("/1.0/operations?recursion=1")?;
    Ok(running_tokens(&ops)
        .into_iter()
        .filter_map(|op| Token::of_operation(op).ok())
        .collect())
}

/// `config trust list` in one of lxc's formats.
fn list(c: &Client, format: Format) -> Result<String> {
    let certs = c.get("/1.0/certificates?recursion=1")?;
    let mut rows = Vec::new();
    for cert in certs.as_array().into_iter().flatten() {
        let s = |k: &str| cert[k].as_str().unwrap_or_default().to_string();
        let fp = s("fingerprint");
        let der = hutch_tls::cert_der_of_pem(&s("certificate"))
            .map_err(|_| anyhow!("Invalid certificate"))?;
        let facts = x509::facts(&der).ok_or_else(|| anyhow!("Invalid certificate"))?;
        rows.push(vec![
            s("type"),
            s("name"),
            facts.common_name,
            fp.chars().take(12).collect(),
            facts.not_before,
            facts.not_after,
        ]);
    }
    rows.sort();
    let headers = [
        "TYPE",
        "NAME",
        "COMMON NAME",
        "FINGERPRINT",
        "ISSUE DATE",
        "EXPIRY DATE",
    ]
    .map(String::from);
    output::render(format, &headers, &rows, &certs)
}

/// A certificate as lxc's `config trust show` prints it (Go's YAML of api.Certificate).
fn show_yaml(cert: &Value) -> String {
    let s = |k: &str| cert[k].as_str().unwrap_or_default().to_string();
    let projects: Vec<String> = cert["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    let mut out = format!(
        "name: {}\ntype: {}\nrestricted: {}\n",
        s("name"),
        s("type"),
        cert["restricted"].as_bool().unwrap_or(false)
    );
    if projects.is_empty() {
        out.push_str("projects: []\n");
    } else {
        out.push_str("projects:\n");
        for p in projects {
            out.push_str(&format!("- {p}\n"));
        }
    }
    out.push_str("certificate: |\n");
    for line in s("certificate").lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!("fingerprint: {}\n", s("fingerprint")));
    out
}

/// Just enough DER to read a certificate's subject common name and validity, as lxc
/// shows them.
mod x509 {
    pub struct Facts {
        pub common_name: String,
        pub not_before: String,
        pub not_after: String,
    }

    /// One TLV: (tag, contents, rest).
    fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = data.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    pub fn facts(der: &[u8]) -> Option<Facts> {
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut rest = tbs;
        let (tag, _, r) = tlv(rest)?;
        // [0] version is optional.
        if tag == 0xa0 {
            rest = r;
        }
        let (_, _, r) = tlv(rest)?; // serial
        let (_, _, r) = tlv(r)?; // signature algorithm
        let (_, _, r) = tlv(r)?; // issuer
        let (_, validity, r) = tlv(r)?;
        let (_, subject, _) = tlv(r)?;
        let (t1, nb, vr) = tlv(validity)?;
        let (t2, na, _) = tlv(vr)?;
        Some(Facts {
            common_name: common_name(subject).unwrap_or_default(),
            not_before: go_date(t1, nb)?,
            not_after: go_date(t2, na)?,
        })
    }

    /// The last CN of a Name (Go's Subject.CommonName).
    fn common_name(mut name: &[u8]) -> Option<String> {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        let mut found = None;
        while !name.is_empty() {
            let (_, set, r) = tlv(name)?;
            name = r;
            let (_, attr, _) = tlv(set)?;
            let (_, oid, r) = tlv(attr)?;
            let (_, value, _) = tlv(r)?;
            if oid == CN {
                found = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        found
    }

    /// UTCTime or GeneralizedTime as Go's "Jan 2, 2006 at 3:04pm (MST)" in UTC.
    fn go_date(tag: u8, v: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(v).ok()?;
        let (year, rest) = match tag {
            0x17 => {
                let y: i32 = s.get(..2)?.parse().ok()?;
                (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
            }
            0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
            _ => return None,
        };
        let num = |r: std::ops::Range<usize>| rest.get(r).and_then(|x| x.parse::<u32>().ok());
        let (month, day, hour, min) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?);
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m = MONTHS.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
        let (h12, ampm) = match hour {
            0 => (12, "am"),
            1..=11 => (hour, "am"),
            12 => (12, "pm"),
            _ => (hour - 12, "pm"),
        };
        Some(format!("{m} {day}, {year} at {h12}:{min:02}{ampm} (UTC)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(expires: Option<&str>) -> Value {
        let mut md = json!({
            "request": {"name": "bob", "type": "client"},
            "secret": "s3cr3t",
            "fingerprint": "ab".repeat(32),
            "addresses": ["127.0.0.1:8443", "[::1]:8443"],
        });
        if let Some(e) = expires {
            md["expiresAt"] = json!(e);
        }
        json!({"class": "token", "status_code": 103, "metadata": md})
    }

    #[test]
    fn tokens_are_built_and_read_as_lxc_does() {
        let t = Token::of_operation(&op(None)).unwrap();
        assert_eq!(t.expires_at, GO_ZERO_TIME);
        let text = t.encode();
        let json = String::from_utf8(hutch_tls::base64_decode(&text).unwrap()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"client_name":"bob","fingerprint":"{}","addresses":["127.0.0.1:8443","[::1]:8443"],"secret":"s3cr3t","expires_at":"0001-01-01T00:00:00Z"}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(Token::decode(&text), Some(t.clone()));
        assert_eq!(t.expiry_shown(), "");
        let e = Token::of_operation(&op(Some("2030-01-02T03:04:05.123456789Z"))).unwrap();
        assert_eq!(e.expiry_shown(), "2030/01/02 03:04 UTC");
        assert_eq!(Token::decode(&e.encode()).unwrap().expires_at, e.expires_at);
    }

    #[test]
    fn what_is_no_token_is_refused() {
        let enc = |v: Value| hutch_tls::base64_encode(v.to_string().as_bytes());
        for not in [
            "https://127.0.0.1:8443".to_string(),
            "h1".into(),
            "127.0.0.1".into(),
            "".into(),
            enc(json!({"client_name": "x", "fingerprint": "f", "addresses": [], "secret": "s"})),
            enc(json!({"client_name": "", "fingerprint": "f", "addresses": ["a"], "secret": "s"})),
            enc(json!({"client_name": "x", "fingerprint": "f", "addresses": ["a"], "secret": ""})),
            enc(json!({"client_name": "x", "fingerprint": "", "addresses": ["a"], "secret": "s"})),
            enc(json!({"client_name": "x", "fingerprint": "f", "addresses": [1], "secret": "s"})),
            enc(json!([1, 2])),
        ] {
            assert_eq!(Token::decode(&not), None, "{not}");
        }
        let ok = enc(
            json!({"client_name": "x", "fingerprint": "f", "addresses": ["a:1"], "secret": "s"}),
        );
        assert_eq!(Token::decode(&ok).unwrap().addresses, ["a:1"]);
        let mut bad = Token::of_operation(&op(None)).unwrap();
        bad.addresses.clear();
        assert!(Token::of_operation(&json!({"metadata": {"secret": "s"}})).is_err());
    }

    #[test]
    fn certificates_read_as_lxc_shows_them() {
        let id = hutch_tls::Identity::generate(hutch_tls::Kind::Client).unwrap();
        let f = x509::facts(&id.cert_der).unwrap();
        assert!(f.common_name.starts_with("root@"), "{}", f.common_name);
        assert!(f.not_before.ends_with("(UTC)"), "{}", f.not_before);
        assert!(f.not_after.contains(" at "), "{}", f.not_after);
        assert!(x509::facts(b"\x30\x03abc").is_none());
    }
}
