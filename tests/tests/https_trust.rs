//! End-to-end: the HTTPS listener and the trust store against a real hutchd. Clients are
//! rustls on loopback with certificates made by `hutch_tls` (as `lxc` makes its own):
//! what an untrusted caller may reach, trusting a client by token, by certificate and by
//! password, revoking, restricting, and the listener following `core.https_address`.
//! Needs root; each test has its own daemon.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use hutch_tests::{require_root, TestDaemon};
use hutch_tls::{Identity, Kind, ServerTrust};
use serde_json::{json, Value};

/// One client of the daemon's HTTPS listener: the server pinned, its own certificate if
/// it has one.
struct Client {
    address: String,
    config: Arc<rustls::ClientConfig>,
    identity: Option<Identity>,
}

impl Client {
    fn new(d: &TestDaemon, url: &str, identity: Option<Identity>) -> Client {
        let server = hutch_tls::cert_der_of_pem(&d.server_cert()).expect("server.crt");
        let config =
            hutch_tls::client_config(ServerTrust::Pinned(server), identity.as_ref()).expect("tls");
        Client {
            address: url.trim_start_matches("https://").to_string(),
            config,
            identity,
        }
    }

    /// A client with a fresh client certificate.
    fn with_new_cert(d: &TestDaemon, url: &str) -> Client {
        Client::new(
            d,
            url,
            Some(Identity::generate(Kind::Client).expect("client cert")),
        )
    }

    fn fingerprint(&self) -> String {
        self.identity.as_ref().expect("identity").fingerprint()
    }

    /// One request on a fresh connection; status and JSON body (Null when not JSON).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, bytes) = self.raw(method, path, body);
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(self.config.clone(), name).expect("client");
        let tcp = TcpStream::connect(&self.address).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.address,
            body.len()
        );
        tls.write_all(head.as_bytes()).expect("send");
        tls.write_all(body.as_bytes()).expect("send");
        let mut resp = Vec::new();
        // The server may close without close_notify once it has answered.
        let _ = tls.read_to_end(&mut resp);
        parse_response(&resp)
    }
}

/// Status and body of an HTTP/1.1 answer (Content-Length or chunked).
fn parse_response(resp: &[u8]) -> (u16, Vec<u8>) {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(resp)));
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    (status, body)
}

/// The unix socket's answer as JSON.
fn local(d: &TestDaemon, method: &str, path: &str, body: Value) -> (u16, Value) {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, text) = d.http(method, path, &bytes);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_forbidden(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"], "not authorized", "{what}: {body}");
    assert_eq!(body["error_code"], 403, "{what}: {body}");
    assert_eq!(body["type"], "error", "{what}: {body}");
}

#[test]
fn untrusted_callers_see_the_public_api_only() {
    if !require_root("untrusted_callers_see_the_public_api_only") {
        return;
    }
    let d = TestDaemon::start();
    let url = d.enable_https();
    for client in [Client::new(&d, &url, None), Client::with_new_cert(&d, &url)] {
        let (status, body) = client.call("GET", "/1.0", None);
        assert_eq!(status, 200, "{body}");
        let m = &body["metadata"];
        assert_eq!(m["auth"], "untrusted");
        assert_eq!(m["public"], false);
        assert_eq!(m["api_version"], "1.0");
        assert_eq!(m["auth_methods"], json!(["tls"]));
        assert!(m["api_extensions"].as_array().unwrap().len() > 10);
        assert!(m.get("config").is_none(), "no config leaks: {m}");
        assert!(m.get("environment").is_none(), "no environment leaks: {m}");
        let (status, body) = client.call("GET", "/1.0/instances", None);
        assert_forbidden(status, &body, "GET /1.0/instances");
    }
    // Showing a certificate does not put it in the trust store.
    let shown = Client::with_new_cert(&d, &url);
    let _ = shown.call("GET", "/1.0", None);
    let (status, body) = local(&d, "GET", "/1.0/certificates", Value::Null);
    assert_eq!(status, 200);
    assert!(!body.to_string().contains(&shown.fingerprint()), "{body}");
    // The socket is still the admin's.
    let (status, body) = local(&d, "GET", "/1.0", Value::Null);
    assert_eq!(status, 200);
    assert_eq!(body["metadata"]["auth"], "trusted");
    let addresses = body["metadata"]["environment"]["addresses"].clone();
    assert_eq!(addresses, json!([url.trim_start_matches("https://")]));
}
