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

/// Issues an add token on the socket; the token as `lxc config trust add` prints it, and
/// its operation's URL.
fn issue_token(d: &TestDaemon, name: &str) -> (String, String) {
    let (status, body) = local(
        d,
        "POST",
        "/1.0/certificates",
        json!({"name": name, "type": "client", "token": true}),
    );
    assert_eq!(status, 202, "{body}");
    let op = body["metadata"].clone();
    assert_eq!(op["class"], "token");
    assert_eq!(op["description"], "Executing operation");
    let m = &op["metadata"];
    assert_eq!(m["request"]["name"], name);
    assert_eq!(m["fingerprint"].as_str().unwrap().len(), 64);
    assert!(!m["addresses"].as_array().unwrap().is_empty(), "{m}");
    let token = json!({
        "client_name": name,
        "fingerprint": m["fingerprint"],
        "addresses": m["addresses"],
        "secret": m["secret"],
        "expires_at": m.get("expiresAt").cloned().unwrap_or(json!("0001-01-01T00:00:00Z")),
    });
    (
        hutch_tls::base64_encode(token.to_string().as_bytes()),
        body["operation"].as_str().unwrap().to_string(),
    )
}

fn assert_trusted(client: &Client, what: &str) {
    let (status, body) = client.call("GET", "/1.0", None);
    assert_eq!(status, 200, "{what}: {body}");
    assert_eq!(body["metadata"]["auth"], "trusted", "{what}");
    let (status, body) = client.call("GET", "/1.0/instances", None);
    assert_eq!(status, 200, "{what}: {body}");
}

fn assert_untrusted(client: &Client, what: &str) {
    let (_, body) = client.call("GET", "/1.0", None);
    assert_eq!(body["metadata"]["auth"], "untrusted", "{what}");
    let (status, body) = client.call("GET", "/1.0/instances", None);
    assert_forbidden(status, &body, what);
}

#[test]
fn clients_are_trusted_by_token_certificate_and_password() {
    if !require_root("clients_are_trusted_by_token_certificate_and_password") {
        return;
    }
    let d = TestDaemon::start();
    // No token without a listener to give out.
    let (status, body) = local(
        &d,
        "POST",
        "/1.0/certificates",
        json!({"name": "x", "type": "client", "token": true}),
    );
    assert_eq!(status, 400, "{body}");
    let url = d.enable_https();

    // By token, used once.
    let (token, _) = issue_token(&d, "by-token");
    let a = Client::with_new_cert(&d, &url);
    assert_untrusted(&a, "before the token");
    let (status, body) = a.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"password": token})),
    );
    assert_eq!(status, 201, "{body}");
    assert_trusted(&a, "by token");
    let b = Client::with_new_cert(&d, &url);
    let (status, body) = b.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"password": token})),
    );
    assert_eq!(status, 403, "a replayed token: {body}");
    assert_eq!(body["error"], "No matching certificate add operation found");
    assert_untrusted(&b, "after a replayed token");
    let (status, body) = local(
        &d,
        "GET",
        &format!("/1.0/certificates/{}", a.fingerprint()),
        Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["name"], "by-token");
    assert_eq!(body["metadata"]["type"], "client");
    assert!(body["metadata"]["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // By certificate, added by a trusted caller (here one trusted over HTTPS).
    let c = Identity::generate(Kind::Client).unwrap();
    let c_b64 = hutch_tls::base64_encode(&c.cert_der);
    let (status, body) = a.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"certificate": c_b64, "name": "by-cert", "type": "client"})),
    );
    assert_eq!(status, 201, "{body}");
    let c = Client::new(&d, &url, Some(c));
    assert_trusted(&c, "by certificate");
    let (status, _) = a.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"certificate": c_b64, "name": "again"})),
    );
    assert_eq!(status, 409, "already in the store");
    for (req, error) in [
        (
            json!({"certificate": "bm90IGEgY2VydA=="}),
            "Invalid certificate material",
        ),
        (
            json!({"certificate": c_b64, "token": true}),
            "Can't use certificate if token is requested",
        ),
        (json!({}), "Client is already trusted"),
        (
            json!({"certificate": c_b64, "type": "admin"}),
            "Unknown certificate type",
        ),
    ] {
        let (status, body) = a.call("POST", "/1.0/certificates", Some(req.clone()));
        assert_eq!(status, 400, "{req}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(error),
            "{req}: {body}"
        );
    }

    // By the trust password.
    let (status, _) = local(
        &d,
        "PATCH",
        "/1.0",
        json!({"config": {"core.trust_password": "s3cret"}}),
    );
    assert_eq!(status, 200);
    let p = Client::with_new_cert(&d, &url);
    let (status, body) = p.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"password": "wrong"})),
    );
    assert_forbidden(status, &body, "a wrong password");
    let (status, body) = p.call("POST", "/1.0/certificates", Some(json!({"type": "client"})));
    assert_forbidden(status, &body, "no password");
    let (status, body) = p.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"password": "s3cret"})),
    );
    assert_eq!(status, 201, "{body}");
    assert_trusted(&p, "by password");
    let (_, body) = local(
        &d,
        "GET",
        &format!("/1.0/certificates/{}", p.fingerprint()),
        Value::Null,
    );
    let name = body["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("root@"),
        "named after its common name: {body}"
    );
    // Without a certificate there is nothing to trust.
    let none = Client::new(&d, &url, None);
    let (status, body) = none.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"password": "s3cret"})),
    );
    assert_eq!(status, 400, "{body}");

    // The store lists them; one is read by prefix, renamed, and deleted.
    let (_, body) = local(&d, "GET", "/1.0/certificates", Value::Null);
    let list = body["metadata"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{body}");
    assert!(list.contains(&json!(format!("/1.0/certificates/{}", p.fingerprint()))));
    let (_, full) = local(&d, "GET", "/1.0/certificates?recursion=1", Value::Null);
    assert_eq!(full["metadata"].as_array().unwrap().len(), 3);
    let prefix = &p.fingerprint()[..12];
    let path = format!("/1.0/certificates/{prefix}");
    let (status, body) = local(&d, "PATCH", &path, json!({"name": "renamed"}));
    assert_eq!(status, 200, "{body}");
    let (_, body) = local(&d, "GET", &path, Value::Null);
    assert_eq!(body["metadata"]["name"], "renamed");
    assert_eq!(body["metadata"]["fingerprint"], p.fingerprint());
    let (status, body) = a.call("DELETE", &path, None);
    assert_eq!(status, 200, "{body}");
    assert_untrusted(&p, "after its certificate was deleted");
    let (status, _) = local(&d, "GET", &path, Value::Null);
    assert_eq!(status, 404);
}

#[test]
fn tokens_expire_and_are_revoked() {
    if !require_root("tokens_expire_and_are_revoked") {
        return;
    }
    let d = TestDaemon::start();
    let url = d.enable_https();

    // Revoked: the operation is cancelled, the token matches nothing.
    let (token, op) = issue_token(&d, "revoked");
    let (status, body) = local(&d, "DELETE", &op, Value::Null);
    assert_eq!(status, 200, "{body}");
    let a = Client::with_new_cert(&d, &url);
    let (status, body) = a.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"password": token})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "No matching certificate add operation found");
    assert_untrusted(&a, "a revoked token");

    // Expired: refused once its time has passed (and consumed).
    let (status, body) = local(
        &d,
        "PATCH",
        "/1.0",
        json!({"config": {"core.remote_token_expiry": "1S"}}),
    );
    assert_eq!(status, 200, "{body}");
    let (token, op) = issue_token(&d, "expiring");
    let (_, body) = local(&d, "GET", &op, Value::Null);
    let expires = body["metadata"]["metadata"]["expiresAt"]
        .as_str()
        .unwrap()
        .to_string();
    let expires_epoch = std::process::Command::new("date")
        .args(["-d", &expires, "+%s"])
        .output()
        .unwrap();
    let expires_epoch: u64 = String::from_utf8_lossy(&expires_epoch.stdout)
        .trim()
        .parse()
        .unwrap();
    hutch_tests::wait_until("the token to expire", Duration::from_secs(30), || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            > expires_epoch
    });
    let (status, body) = a.call(
        "POST",
        "/1.0/certificates",
        Some(json!({"password": token})),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "Token has expired");
    assert_untrusted(&a, "an expired token");
    let (status, body) = local(
        &d,
        "PATCH",
        "/1.0",
        json!({"config": {"core.remote_token_expiry": "soon"}}),
    );
    assert_eq!(status, 400, "{body}");
}

/// Every route but LXD's untrusted ones, with each method it takes.
const PRIVATE_ROUTES: &[(&str, &str)] = &[
    ("PUT", "/1.0"),
    ("PATCH", "/1.0"),
    ("GET", "/1.0/certificates"),
    ("GET", "/1.0/certificates/abcd"),
    ("PUT", "/1.0/certificates/abcd"),
    ("PATCH", "/1.0/certificates/abcd"),
    ("DELETE", "/1.0/certificates/abcd"),
    ("GET", "/1.0/events"),
    ("GET", "/1.0/instances"),
    ("POST", "/1.0/instances"),
    ("GET", "/1.0/instances/c1"),
    ("PUT", "/1.0/instances/c1"),
    ("PATCH", "/1.0/instances/c1"),
    ("POST", "/1.0/instances/c1"),
    ("DELETE", "/1.0/instances/c1"),
    ("GET", "/1.0/instances/c1/state"),
    ("PUT", "/1.0/instances/c1/state"),
    ("POST", "/1.0/instances/c1/exec"),
    ("GET", "/1.0/instances/c1/files?path=/etc/passwd"),
    ("POST", "/1.0/instances/c1/files?path=/tmp/x"),
    ("POST", "/1.0/instances/c1/console"),
    ("GET", "/1.0/instances/c1/logs"),
    ("GET", "/1.0/instances/c1/snapshots"),
    ("POST", "/1.0/instances/c1/snapshots"),
    ("GET", "/1.0/instances/c1/metadata"),
    ("GET", "/1.0/containers"),
    ("GET", "/1.0/containers/c1"),
    ("POST", "/1.0/images"),
    ("PUT", "/1.0/images/abcd"),
    ("PATCH", "/1.0/images/abcd"),
    ("DELETE", "/1.0/images/abcd"),
    ("POST", "/1.0/images/abcd/refresh"),
    ("GET", "/1.0/images/aliases"),
    ("POST", "/1.0/images/aliases"),
    ("PUT", "/1.0/images/aliases/bb"),
    ("DELETE", "/1.0/images/aliases/bb"),
    ("GET", "/1.0/operations"),
    ("GET", "/1.0/operations/abcd"),
    ("DELETE", "/1.0/operations/abcd"),
    ("GET", "/1.0/profiles"),
    ("POST", "/1.0/profiles"),
    ("GET", "/1.0/profiles/default"),
    ("PUT", "/1.0/profiles/default"),
    ("DELETE", "/1.0/profiles/default"),
    ("GET", "/1.0/networks"),
    ("POST", "/1.0/networks"),
    ("GET", "/1.0/storage-pools"),
    ("POST", "/1.0/storage-pools"),
    ("GET", "/1.0/storage-pools/default"),
    ("GET", "/1.0/storage-pools/default/volumes"),
    ("POST", "/1.0/storage-pools/default/volumes/custom"),
    ("GET", "/1.0/projects"),
    ("GET", "/1.0/projects/default"),
    ("GET", "/1.0/resources"),
    ("GET", "/1.0/warnings"),
];

#[test]
fn untrusted_callers_are_refused_every_private_route() {
    if !require_root("untrusted_callers_are_refused_every_private_route") {
        return;
    }
    let d = TestDaemon::start();
    let url = d.enable_https();
    let clients = [Client::new(&d, &url, None), Client::with_new_cert(&d, &url)];
    for client in &clients {
        for (method, path) in PRIVATE_ROUTES {
            let body = (*method != "GET" && *method != "DELETE").then(|| json!({}));
            let (status, resp) = client.call(method, path, body);
            assert_forbidden(status, &resp, &format!("{method} {path}"));
        }
        // The untrusted ones answer, with nothing private: no token for an untrusted
        // caller, no operation without its secret.
        let (status, body) = client.call("POST", "/1.0/certificates", Some(json!({"token": true})));
        assert_forbidden(status, &body, "a token asked by an untrusted caller");
        let (status, body) = client.call("GET", "/1.0/operations/abcd/wait", None);
        assert_forbidden(status, &body, "wait without a secret");
        let (status, body) = client.call("GET", "/1.0/images", None);
        assert_eq!(
            (status, body["metadata"].clone()),
            (200, json!([])),
            "{body}"
        );
    }
    // Nothing was changed by all that.
    let (_, body) = local(&d, "GET", "/1.0/profiles", Value::Null);
    assert_eq!(body["metadata"], json!(["/1.0/profiles/default"]));
}

#[test]
fn restricted_certificates_read_and_metrics_certificates_reach_nothing() {
    if !require_root("restricted_certificates_read_and_metrics_certificates_reach_nothing") {
        return;
    }
    let d = TestDaemon::start();
    let url = d.enable_https();
    let add = |kind: &str, restricted: bool| {
        let id = Identity::generate(Kind::Client).unwrap();
        let (status, body) = local(
            &d,
            "POST",
            "/1.0/certificates",
            json!({"certificate": hutch_tls::base64_encode(&id.cert_der), "name": kind,
                   "type": kind, "restricted": restricted}),
        );
        assert_eq!(status, 201, "{body}");
        Client::new(&d, &url, Some(id))
    };
    let reader = add("client", true);
    assert_trusted(&reader, "restricted");
    for (method, path) in [("GET", "/1.0/profiles"), ("GET", "/1.0/certificates")] {
        let (status, body) = reader.call(method, path, None);
        assert_eq!(status, 200, "{method} {path}: {body}");
    }
    for (method, path, body) in [
        ("PUT", "/1.0", json!({"config": {}})),
        ("POST", "/1.0/profiles", json!({"name": "p"})),
        ("POST", "/1.0/certificates", json!({"token": true})),
        ("DELETE", "/1.0/profiles/default", Value::Null),
    ] {
        let (status, resp) = reader.call(method, path, Some(body));
        assert_forbidden(status, &resp, &format!("restricted {method} {path}"));
    }
    let metrics = add("metrics", false);
    assert_untrusted(&metrics, "a metrics certificate");
}

#[test]
fn the_listener_follows_core_https_address() {
    if !require_root("the_listener_follows_core_https_address") {
        return;
    }
    let d = TestDaemon::start();
    let url = d.enable_https();
    let old = url.trim_start_matches("https://").to_string();
    let client = Client::new(&d, &url, None);
    assert_eq!(client.call("GET", "/1.0", None).0, 200);

    // An address taken by another socket: refused, nothing changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let (status, body) = local(
        &d,
        "PATCH",
        "/1.0",
        json!({"config": {"core.https_address": taken_addr, "user.x": "1"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Cannot listen on network HTTPS socket"),
        "{body}"
    );
    let (_, info) = local(&d, "GET", "/1.0", Value::Null);
    assert_eq!(
        info["metadata"]["config"],
        json!({"core.https_address": old})
    );
    assert_eq!(client.call("GET", "/1.0", None).0, 200, "still served");
    drop(taken);

    // Moved: the old port closes, the new one serves.
    let port = hutch_tests::free_port();
    let (status, body) = local(
        &d,
        "PATCH",
        "/1.0",
        json!({"config": {"core.https_address": format!("127.0.0.1:{port}")}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        TcpStream::connect(&old).is_err(),
        "the old address is closed"
    );
    let moved = Client::new(&d, &format!("https://127.0.0.1:{port}"), None);
    assert_eq!(moved.call("GET", "/1.0", None).0, 200);
    let (_, info) = local(&d, "GET", "/1.0", Value::Null);
    assert_eq!(
        info["metadata"]["environment"]["addresses"],
        json!([format!("127.0.0.1:{port}")])
    );

    // Kept across a restart: the daemon listens again as it starts.
    let mut d = d;
    d.kill();
    d.spawn();
    assert_eq!(
        moved.call("GET", "/1.0", None).0,
        200,
        "listening after a restart"
    );

    // Unset: nothing listens.
    let (status, _) = local(
        &d,
        "PATCH",
        "/1.0",
        json!({"config": {"core.https_address": ""}}),
    );
    assert_eq!(status, 200);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped");
    let (_, info) = local(&d, "GET", "/1.0", Value::Null);
    assert_eq!(info["metadata"]["environment"]["addresses"], json!([]));
}

#[test]
fn untrusted_callers_see_public_images_only() {
    if !require_root("untrusted_callers_see_public_images_only") {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox(hutch_tests::daemon::Via::Hutch);
    let url = d.enable_https();
    let client = Client::new(&d, &url, None);
    let (_, body) = local(&d, "GET", "/1.0/images", Value::Null);
    let image = body["metadata"][0].as_str().unwrap().to_string();
    for path in [
        image.clone(),
        format!("{image}/export"),
        "/1.0/images/aliases/bb".into(),
    ] {
        let (status, body) = client.call("GET", &path, None);
        assert_eq!(status, 404, "private {path}: {body}");
    }
    assert_eq!(
        client.call("GET", "/1.0/images", None).1["metadata"],
        json!([])
    );
    let (status, body) = local(&d, "PATCH", &image, json!({"public": true}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        client.call("GET", "/1.0/images", None).1["metadata"],
        json!([image])
    );
    let (status, body) = client.call("GET", &image, None);
    assert_eq!(
        (status, body["metadata"]["public"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, body) = client.call("GET", "/1.0/images/aliases/bb", None);
    assert_eq!(status, 200, "{body}");
    let (status, bytes) = client.raw("GET", &format!("{image}/export"), None);
    assert_eq!(status, 200);
    assert!(bytes.len() > 1000, "the image itself");
}
