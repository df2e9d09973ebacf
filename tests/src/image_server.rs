//! A small static-file image server for the e2e tests: HTTPS on loopback with a test CA (or
//! plain HTTP), a log of the paths asked for, and faults on demand (a truncated body, a
//! server that vanishes mid-transfer), so simplestreams clients (hutch's, LXD's `lxc`,
//! pylxd) can be tested against a real server with no network beyond 127.0.0.1.
//!
//! One thread per connection; HTTP/1.1 `GET` and `HEAD` with `Content-Length`, keep-alive,
//! and single `Range: bytes=a-b` requests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test run: its certificate is written as PEM to a
/// temporary directory, so it can be handed to any client as a trust root
/// (`SSL_CERT_FILE` for hutchd and Go's `lxc`, `REQUESTS_CA_BUNDLE` for pylxd).
pub struct TestCa {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A fresh CA, its PEM at [`TestCa::ca_file`].
    pub fn new() -> TestCa {
        Self::with_key(KeyPair::generate().expect("generate CA key"))
    }

    /// A CA whose key is kept in `dir` (`ca.key`, made on first use) and whose certificate
    /// is written there as `ca.pem` too: a daemon that read `ca.pem` at its start (Go reads
    /// its roots once) trusts servers of later runs, whose certificates share the key and
    /// the name. For the benchmark, whose LXD outlives one run.
    pub fn persistent(dir: &Path) -> std::io::Result<TestCa> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let key_file = dir.join("ca.key");
        let key = match std::fs::read_to_string(&key_file) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(std::io::Error::other)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_file)?;
                f.write_all(key.serialize_pem().as_bytes())?;
                key
            }
            Err(e) => return Err(e),
        };
        let ca = Self::with_key(key);
        let pem = dir.join("ca.pem");
        if !pem.exists() {
            std::fs::copy(ca.ca_file(), pem)?;
        }
        Ok(ca)
    }

    fn with_key(key: KeyPair) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "hutch test CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let dir = tempfile::Builder::new()
            .prefix("hutch-test-ca-")
            .tempdir()
            .expect("CA temp dir");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write CA PEM");
        TestCa { dir, cert, key }
    }

    /// The CA certificate as a PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate for `127.0.0.1` and `localhost` signed by this CA, and its key.
    pub fn server_cert(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("generate server key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "127.0.0.1");
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign server cert");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.ca_der()], der)
    }

    /// A rustls client configuration (ring) that trusts only this CA.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA root");
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// A fault the server injects when a given path is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send the full `Content-Length` but only the first `after` bytes of the body, then
    /// close the connection cleanly (TLS close_notify): a truncated download.
    Truncate { after: u64 },
    /// Send the first `after` bytes of the body, then the whole server goes away: every
    /// connection is shut down without close_notify and the listener is closed, so retries
    /// are refused.
    Vanish { after: u64 },
    /// Send the first `after` bytes of the body, then hold the connection open, sending
    /// nothing more, until the server stops: a download caught in the middle.
    Stall { after: u64 },
}

/// What connection threads share with the server handle.
struct Shared {
    root: PathBuf,
    requests: Mutex<Vec<String>>,
    faults: Mutex<HashMap<String, Fault>>,
    stopping: AtomicBool,
    addr: SocketAddr,
    /// A clone of every open connection by its number, to shut them down on stop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// Stops accepting and shuts every connection down. Safe to call from any thread and
    /// more than once.
    fn shut_down(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop, which then sees `stopping` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for (_, c) in self.conns.lock().unwrap().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// The static-file server. Stops (and joins its threads) on [`ImageServer::stop`] or drop.
pub struct ImageServer {
    shared: Arc<Shared>,
    scheme: &'static str,
    ca: Option<Arc<TestCa>>,
    accept: Option<JoinHandle<()>>,
}

impl ImageServer {
    /// Serves `root` over HTTPS on 127.0.0.1 with a fresh test CA.
    pub fn https(root: &Path) -> ImageServer {
        ImageServer::https_with_ca(root, Arc::new(TestCa::new()))
    }

    /// Serves `root` over HTTPS with a certificate from `ca` (several servers, one CA file).
    pub fn https_with_ca(root: &Path, ca: Arc<TestCa>) -> ImageServer {
        let (chain, key) = ca.server_cert();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        ImageServer::start(root, Some(Arc::new(config)), Some(ca))
    }

    /// Serves `root` over plain HTTP.
    pub fn http(root: &Path) -> ImageServer {
        ImageServer::start(root, None, None)
    }

    fn start(
        root: &Path,
        tls: Option<Arc<rustls::ServerConfig>>,
        ca: Option<Arc<TestCa>>,
    ) -> ImageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            addr: listener.local_addr().expect("local addr"),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("image-server".into())
            .spawn(move || accept_loop(listener, tls, accept_shared))
            .expect("spawn accept thread");
        ImageServer {
            shared,
            scheme,
            ca,
            accept: Some(accept),
        }
    }

    /// `https://127.0.0.1:PORT` (or `http://`), no trailing slash.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.shared.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The CA's PEM file. Panics for a plain-HTTP server.
    pub fn ca_file(&self) -> PathBuf {
        self.ca
            .as_ref()
            .expect("a plain-HTTP image server has no CA")
            .ca_file()
    }

    /// The CA, for HTTPS servers.
    pub fn ca(&self) -> Option<&Arc<TestCa>> {
        self.ca.as_ref()
    }

    /// The paths asked for so far (decoded, with a leading `/`, no query), in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// Injects `fault` whenever `path` (relative to the root, with or without a leading `/`)
    /// is asked for.
    pub fn set_fault(&self, path: &str, fault: Fault) {
        let key = format!("/{}", path.trim_start_matches('/'));
        self.shared.faults.lock().unwrap().insert(key, fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// True once the server stopped (by [`ImageServer::stop`] or a [`Fault::Vanish`]).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Stops the server: closes the listener and every connection, and joins the threads.
    pub fn stop(&mut self) {
        self.shared.shut_down();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Connection threads end once their sockets are shut down.
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, shared: Arc<Shared>) {
    for (id, stream) in (0u64..).zip(listener.incoming()) {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        // A client that goes quiet must not hold a thread past the test.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = stream.set_nodelay(true);
        if let Ok(clone) = stream.try_clone() {
            shared.conns.lock().unwrap().insert(id, clone);
        }
        let conn_shared = Arc::clone(&shared);
        let tls = tls.clone();
        let handle = std::thread::Builder::new()
            .name("image-server-conn".into())
            .spawn(move || {
                match tls {
                    Some(config) => {
                        if let Ok(conn) = rustls::ServerConnection::new(config) {
                            serve(rustls::StreamOwned::new(conn, stream), &conn_shared);
                        }
                    }
                    None => serve(stream, &conn_shared),
                }
                // The clone kept for stop() would hold the socket open: the client must
                // see the end of a closed connection (a truncated plain-HTTP body above all).
                if let Some(c) = conn_shared.conns.lock().unwrap().remove(&id) {
                    let _ = c.shutdown(Shutdown::Both);
                }
            });
        if let Ok(handle) = handle {
            let mut threads = shared.threads.lock().unwrap();
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
        }
    }
    // The listener drops here: new connections are refused.
}

/// A connection: plain TCP or TLS over it.
trait Conn: Read + Write {
    /// Ends the stream cleanly (TLS close_notify); nothing for plain TCP.
    fn close_notify(&mut self) {}
}

impl Conn for TcpStream {}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }
}

/// One parsed request head.
struct Request {
    method: String,
    path: String,
    range: Option<String>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    close: bool,
}

/// Reads one request head; `None` at end of stream or on garbage.
fn read_request<R: BufRead>(reader: &mut R) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.0").to_string();
    let mut range = None;
    let (mut if_none_match, mut if_modified_since) = (None, None);
    let mut close = version == "HTTP/1.0";
    let mut head_bytes = line.len();
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header).ok()?;
        head_bytes += n;
        if n == 0 || head_bytes > 64 * 1024 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "range" => range = Some(value.to_string()),
            "if-none-match" => if_none_match = Some(value.to_string()),
            "if-modified-since" => if_modified_since = Some(value.to_string()),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    Some(Request {
        method,
        path: percent_decode(path),
        range,
        if_none_match,
        if_modified_since,
        close,
    })
}

/// An HTTP date (IMF-fixdate) of a Unix time: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm), for days since 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file under `root` a request path names; `None` for `..`, directories and misses.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let full = root.join(rel);
    full.is_file().then_some(full)
}

/// Parses `bytes=a-b` / `bytes=a-` / `bytes=-n` against a file of `len` bytes.
fn parse_range(spec: &str, len: u64) -> Option<(u64, u64)> {
    let spec = spec.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(len.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && end < len).then_some((start, end))
}

fn serve<S: Conn>(stream: S, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        shared.requests.lock().unwrap().push(req.path.clone());
        let keep_alive = respond(reader.get_mut(), &req, shared);
        if !keep_alive || req.close {
            let _ = reader.get_mut().flush();
            reader.get_mut().close_notify();
            return;
        }
    }
}

fn simple_response<S: Conn>(stream: &mut S, status: &str, head_only: bool) -> bool {
    let body = format!("{status}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut ok = stream.write_all(head.as_bytes()).is_ok();
    if !head_only {
        ok = ok && stream.write_all(body.as_bytes()).is_ok();
    }
    ok && stream.flush().is_ok()
}

/// Answers one request; false when the connection must close.
fn respond<S: Conn>(stream: &mut S, req: &Request, shared: &Shared) -> bool {
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return simple_response(stream, "405 Method Not Allowed", false);
    }
    let Some(file) = resolve(&shared.root, &req.path) else {
        return simple_response(stream, "404 Not Found", head_only);
    };
    let Ok(mut f) = std::fs::File::open(&file) else {
        return simple_response(stream, "404 Not Found", head_only);
    };
    let Ok(meta) = f.metadata() else {
        return simple_response(stream, "404 Not Found", head_only);
    };
    let len = meta.len();
    // Validators as a static web server gives them, so clients can revalidate for free.
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let etag = format!("\"{len:x}-{:x}\"", mtime.as_nanos());
    let last_modified = http_date(mtime.as_secs());
    let validators = format!("ETag: {etag}\r\nLast-Modified: {last_modified}\r\n");
    let not_modified = match (&req.if_none_match, &req.if_modified_since) {
        (Some(tags), _) => tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"),
        (None, Some(since)) => *since == last_modified,
        (None, None) => false,
    };
    if not_modified {
        let head = format!("HTTP/1.1 304 Not Modified\r\n{validators}\r\n");
        return stream.write_all(head.as_bytes()).is_ok() && stream.flush().is_ok();
    }
    let content_type = if req.path.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let (status, start, count, range_header) = match req.range.as_deref() {
        Some(spec) => match parse_range(spec, len) {
            Some((a, b)) => (
                "206 Partial Content",
                a,
                b - a + 1,
                format!("Content-Range: bytes {a}-{b}/{len}\r\n"),
            ),
            None => {
                let head = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
                );
                return stream.write_all(head.as_bytes()).is_ok() && stream.flush().is_ok();
            }
        },
        None => ("200 OK", 0, len, String::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {count}\r\nAccept-Ranges: bytes\r\n{validators}{range_header}\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    if head_only {
        return stream.flush().is_ok();
    }
    let fault = shared.faults.lock().unwrap().get(&req.path).copied();
    let limit = match fault {
        Some(Fault::Truncate { after } | Fault::Vanish { after } | Fault::Stall { after }) => {
            after.min(count)
        }
        None => count,
    };
    if start > 0 {
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(start)).is_err() {
            return false;
        }
    }
    let copied = std::io::copy(&mut (&mut f).take(limit), stream);
    let _ = stream.flush();
    match fault {
        Some(Fault::Truncate { .. }) => {
            stream.close_notify();
            false
        }
        Some(Fault::Vanish { .. }) => {
            shared.shut_down();
            false
        }
        Some(Fault::Stall { .. }) => {
            while !shared.stopping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        }
        None => copied.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(server: &ImageServer) -> ureq::Agent {
        let mut builder = ureq::AgentBuilder::new().timeout(Duration::from_secs(30));
        if let Some(ca) = server.ca() {
            builder = builder.tls_config(Arc::new(ca.client_config()));
        }
        builder.build()
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("streams/v1")).unwrap();
        std::fs::write(
            dir.path().join("streams/v1/index.json"),
            b"{\"format\":\"index:1.0\"}",
        )
        .unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::create_dir_all(dir.path().join("images/x/20240501_05:24")).unwrap();
        std::fs::write(dir.path().join("images/x/20240501_05:24/root.tar.xz"), &big).unwrap();
        dir
    }

    fn body(resp: ureq::Response) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        resp.into_reader().read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn https_serves_files_verified_by_the_test_ca_and_logs_paths() {
        let dir = tree();
        let server = ImageServer::https(dir.path());
        assert!(server.url().starts_with("https://127.0.0.1:"));
        let pem = std::fs::read_to_string(server.ca_file()).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let agent = agent(&server);

        let resp = agent
            .get(&format!("{}/streams/v1/index.json", server.url()))
            .call()
            .unwrap();
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(body(resp).unwrap(), b"{\"format\":\"index:1.0\"}");

        // Same agent, kept-alive connection; an encoded ':' is decoded.
        let url = format!("{}/images/x/20240501_05%3A24/root.tar.xz", server.url());
        let resp = agent.get(&url).call().unwrap();
        assert_eq!(resp.header("content-length"), Some("200000"));
        assert_eq!(body(resp).unwrap().len(), 200_000);

        let resp = agent.head(&url).call().unwrap();
        assert_eq!(resp.header("content-length"), Some("200000"));

        let resp = agent.get(&url).set("Range", "bytes=10-19").call().unwrap();
        assert_eq!(resp.status(), 206);
        let expected: Vec<u8> = (10..20u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(body(resp).unwrap(), expected);

        match agent.get(&format!("{}/nope", server.url())).call() {
            Err(ureq::Error::Status(404, _)) => {}
            other => panic!("expected 404, got {other:?}"),
        }
        match agent.get(&format!("{}/../etc/passwd", server.url())).call() {
            Err(ureq::Error::Status(404, _)) => {}
            other => panic!("expected 404, got {other:?}"),
        }
        assert_eq!(
            server.requests()[..4],
            [
                "/streams/v1/index.json",
                "/images/x/20240501_05:24/root.tar.xz",
                "/images/x/20240501_05:24/root.tar.xz",
                "/images/x/20240501_05:24/root.tar.xz",
            ]
        );
    }

    #[test]
    fn an_untrusting_client_is_refused() {
        let dir = tree();
        let server = ImageServer::https(dir.path());
        let other_ca = TestCa::new();
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(other_ca.client_config()))
            .build();
        let err = agent
            .get(&format!("{}/streams/v1/index.json", server.url()))
            .call()
            .unwrap_err();
        assert!(matches!(err, ureq::Error::Transport(_)), "{err:?}");
    }

    #[test]
    fn plain_http_mode_serves_too() {
        let dir = tree();
        let server = ImageServer::http(dir.path());
        assert!(server.url().starts_with("http://127.0.0.1:"));
        let resp = agent(&server)
            .get(&format!("{}/streams/v1/index.json", server.url()))
            .call()
            .unwrap();
        assert_eq!(body(resp).unwrap(), b"{\"format\":\"index:1.0\"}");
        assert_eq!(server.requests(), ["/streams/v1/index.json"]);
    }

    #[test]
    fn a_truncated_body_is_short_but_the_server_carries_on() {
        let dir = tree();
        let server = ImageServer::https(dir.path());
        server.set_fault(
            "images/x/20240501_05:24/root.tar.xz",
            Fault::Truncate { after: 1000 },
        );
        let agent = agent(&server);
        let url = format!("{}/images/x/20240501_05:24/root.tar.xz", server.url());
        let resp = agent.get(&url).call().unwrap();
        assert_eq!(resp.header("content-length"), Some("200000"));
        let mut got = Vec::new();
        let result = resp.into_reader().read_to_end(&mut got);
        assert!(result.is_err() || got.len() < 200_000, "{result:?}");
        assert!(got.len() <= 1000);

        server.clear_faults();
        assert_eq!(
            body(agent.get(&url).call().unwrap()).unwrap().len(),
            200_000
        );
        assert!(!server.is_stopped());
    }

    #[test]
    fn a_truncated_plain_http_body_ends_with_the_connection() {
        let dir = tree();
        let server = ImageServer::http(dir.path());
        server.set_fault(
            "images/x/20240501_05:24/root.tar.xz",
            Fault::Truncate { after: 10 },
        );
        let url = format!("{}/images/x/20240501_05:24/root.tar.xz", server.url());
        let resp = agent(&server).get(&url).call().unwrap();
        let mut got = Vec::new();
        let result = resp.into_reader().read_to_end(&mut got);
        assert!(result.is_err() || got.len() == 10, "{result:?}");
        assert!(got.len() <= 10);
    }

    #[test]
    fn a_vanishing_server_cuts_the_body_and_refuses_what_follows() {
        let dir = tree();
        let server = ImageServer::http(dir.path());
        server.set_fault(
            "/images/x/20240501_05:24/root.tar.xz",
            Fault::Vanish { after: 5000 },
        );
        let agent = agent(&server);
        let url = format!("{}/images/x/20240501_05:24/root.tar.xz", server.url());
        let resp = agent.get(&url).call().unwrap();
        let mut got = Vec::new();
        let result = resp.into_reader().read_to_end(&mut got);
        assert!(result.is_err() || got.len() < 200_000, "{result:?}");
        assert!(server.is_stopped());
        // The accept loop ends on its own; later requests are refused.
        let refused = (0..100).any(|_| {
            let r = agent
                .get(&format!("{}/streams/v1/index.json", server.url()))
                .call();
            if r.is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
            false
        });
        assert!(refused);
    }

    #[test]
    fn stop_ends_open_keep_alive_connections() {
        let dir = tree();
        let mut server = ImageServer::http(dir.path());
        let mut idle = TcpStream::connect(server.addr()).unwrap();
        idle.write_all(b"GET /streams/v1/index.json HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(idle.try_clone().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        // The connection is idle and kept alive; stop must not wait for it.
        server.stop();
        assert!(server.is_stopped());
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        assert!(TcpStream::connect(server.addr()).is_err());
    }

    #[test]
    fn revalidation_answers_304_without_a_body() {
        let dir = tree();
        let server = ImageServer::https(dir.path());
        let agent = agent(&server);
        let url = format!("{}/streams/v1/index.json", server.url());
        let resp = agent.get(&url).call().unwrap();
        let etag = resp.header("etag").unwrap().to_string();
        let last_modified = resp.header("last-modified").unwrap().to_string();
        assert!(last_modified.ends_with(" GMT"), "{last_modified}");
        body(resp).unwrap();
        let resp = agent.get(&url).set("If-None-Match", &etag).call().unwrap();
        assert_eq!(resp.status(), 304);
        assert_eq!(resp.header("etag"), Some(etag.as_str()));
        let resp = agent
            .get(&url)
            .set("If-Modified-Since", &last_modified)
            .call()
            .unwrap();
        assert_eq!(resp.status(), 304);
        // A changed file has another tag: served again.
        std::fs::write(dir.path().join("streams/v1/index.json"), b"{}").unwrap();
        let resp = agent.get(&url).set("If-None-Match", &etag).call().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body(resp).unwrap(), b"{}");
        assert_eq!(server.requests().len(), 4);
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn ranges_parse_as_http_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("lines=0-1", 100), None);
        assert_eq!(percent_decode("/a%3Ab%2f%zz%4"), "/a:b/%zz%4");
    }
}
