//! A small synchronous HTTP/1.1 client for hutchd's unix socket or an LXD-protocol server
//! over HTTPS, with LXD's envelope, operations and websockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hutch_api::Response as Envelope;
use serde_json::Value;

use crate::progress::Progress;

/// The daemon's socket: `$HUTCH_DIR/unix.socket`, default /var/lib/hutch.
pub fn socket_path() -> PathBuf {
    let dir = std::env::var_os("HUTCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/hutch"));
    dir.join("unix.socket")
}

/// One connection to a server: hutchd's unix socket, or TLS over TCP to an HTTPS remote.
/// Requests, streamed bodies and websockets all run over it.
pub enum Conn {
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    /// A read timeout on the socket under the connection (the websocket watchers poll).
    pub fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(d),
            Conn::Tls(s) => s.sock.set_read_timeout(d),
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tls(s) => s.sock.as_fd(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A raw response, its body read whole (`Streamed` reads it as it comes).
pub struct Raw {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A response whose body is read as a stream (`Read`), chunked or not.
pub struct Streamed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<Conn>,
    body: Body,
}

/// How the body of a `Streamed` is framed: `Content-Length` with `left` bytes unread, to
/// the end of the connection (we always send `Connection: close`), or in chunks with `left`
/// bytes of the current one unread.
enum Body {
    Length { left: u64 },
    Plain,
    Chunked { left: usize, done: bool },
}

impl Streamed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads the rest of the body into memory (for JSON answers).
    pub fn into_raw(mut self) -> Result<Raw> {
        let mut body = Vec::new();
        self.read_to_end(&mut body)?;
        Ok(Raw {
            status: self.status,
            body,
        })
    }
}

impl Read for Streamed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.body {
            Body::Length { left: 0 } => Ok(0),
            Body::Length { left } => {
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                *left -= n as u64;
                Ok(n)
            }
            Body::Plain => match self.reader.read(buf) {
                // A TLS peer that hangs up without close_notify (the body is unframed, so
                // its end is the connection's end either way).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
            Body::Chunked { done: true, .. } => Ok(0),
            Body::Chunked { left, done } => {
                if *left == 0 {
                    let mut size = String::new();
                    self.reader.read_line(&mut size)?;
                    if size.trim().is_empty() {
                        // The CRLF that ends the previous chunk.
                        size.clear();
                        self.reader.read_line(&mut size)?;
                    }
                    let size = size.trim();
                    let n = usize::from_str_radix(size.split(';').next().unwrap_or(""), 16)
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("bad chunk size {size:?}"),
                            )
                        })?;
                    if n == 0 {
                        *done = true;
                        return Ok(0);
                    }
                    *left = n;
                }
                let want = buf.len().min(*left);
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                *left -= n;
                Ok(n)
            }
        }
    }
}

/// Where a client's requests go.
#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Https(Arc<Https>),
}

/// An LXD-protocol server over HTTPS.
pub struct Https {
    /// `https://HOST:PORT`, as the remote's address.
    pub url: String,
    /// `HOST:PORT` for the Host header and the dial.
    authority: String,
    server_name: rustls::pki_types::ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https").field("url", &self.url).finish()
    }
}

impl Https {
    /// A server at `url` (`https://HOST[:PORT][/...]`, port 8443 when none is given) with
    /// `tls` deciding which certificates it may show.
    pub fn new(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Https> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("Invalid URL scheme in \"{url}\": only https is supported"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) =
            split_host_port(authority).ok_or_else(|| anyhow!("Invalid address \"{url}\""))?;
        let server_name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| anyhow!("Invalid host name \"{host}\" in \"{url}\""))?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Https {
            url: format!("https://{authority}"),
            authority,
            server_name,
            tls,
        })
    }

    fn connect(&self) -> Result<Conn> {
        let addrs: Vec<_> = self
            .authority
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", self.url))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(t), _) => t,
            // As lxc (Go's net/http) words it.
            (None, Some(e)) => {
                let why = match (e.kind(), e.raw_os_error()) {
                    (std::io::ErrorKind::TimedOut, _) => "i/o timeout".to_string(),
                    (_, Some(n)) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
                    _ => e.to_string(),
                };
                bail!(
                    "Get \"{}\": Unable to connect to: {} ([dial tcp {}: connect: {why}])",
                    self.url,
                    self.authority,
                    self.authority
                )
            }
            (None, None) => bail!("cannot resolve {}", self.url),
        };
        tcp.set_nodelay(true).ok();
        let conn = rustls::ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(|e| anyhow!("TLS setup: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // The handshake now, so a refused certificate is said as such.
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| anyhow!("TLS handshake with {} failed: {e}", self.url))?;
        }
        Ok(Conn::Tls(Box::new(tls)))
    }
}

/// `HOST:PORT`, `[V6]:PORT`, `HOST` or `V6` into host (no brackets) and port (8443).
pub fn split_host_port(authority: &str) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 8443,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    if authority.matches(':').count() > 1 {
        return Some((authority.to_string(), 8443));
    }
    match authority.split_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None if authority.is_empty() => None,
        None => Some((authority.to_string(), 8443)),
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// Why this remote cannot be used (it is no LXD-protocol server), said on the first
    /// request.
    unusable: Option<String>,
}

impl Client {
    /// hutchd's own socket (`$HUTCH_DIR/unix.socket`).
    pub fn new() -> Self {
        Self::at(socket_path())
    }

    /// A hutchd listening on `socket`.
    pub fn at(socket: PathBuf) -> Self {
        Client {
            endpoint: Endpoint::Unix(socket),
            unusable: None,
        }
    }

    /// An LXD-protocol server over HTTPS.
    pub fn https(server: Https) -> Self {
        Client {
            endpoint: Endpoint::Https(Arc::new(server)),
            unusable: None,
        }
    }

    /// A client whose every request fails with `why`.
    pub fn unusable(why: &str) -> Self {
        Client {
            endpoint: Endpoint::Unix(PathBuf::new()),
            unusable: Some(why.to_string()),
        }
    }

    /// Whether both clients talk to the same server (same socket, same URL).
    pub fn same_server(&self, other: &Client) -> bool {
        match (&self.endpoint, &other.endpoint) {
            (Endpoint::Unix(a), Endpoint::Unix(b)) => a == b,
            (Endpoint::Https(a), Endpoint::Https(b)) => a.url == b.url,
            _ => false,
        }
    }

    /// `https://HOST:PORT` of an HTTPS server; None for a unix socket.
    pub fn https_url(&self) -> Option<&str> {
        match &self.endpoint {
            Endpoint::Https(h) => Some(&h.url),
            Endpoint::Unix(_) => None,
        }
    }

    /// A new connection to the server.
    pub fn connect(&self) -> Result<Conn> {
        if let Some(why) = &self.unusable {
            bail!("{why}");
        }
        match &self.endpoint {
            Endpoint::Unix(socket) => {
                UnixStream::connect(socket)
                    .map(Conn::Unix)
                    .with_context(|| {
                        format!(
                            "cannot reach hutchd at {} (is it running?)",
                            socket.display()
                        )
                    })
            }
            Endpoint::Https(h) => h.connect(),
        }
    }

    /// The Host header (and websocket URL authority).
    fn host(&self) -> &str {
        match &self.endpoint {
            Endpoint::Unix(_) => "unix.socket",
            Endpoint::Https(h) => &h.authority,
        }
    }

    /// Sends one request and reads the whole response.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Raw> {
        let mut body = body;
        let len = body.len() as u64;
        self.send(method, path, headers, &mut body, len)?.into_raw()
    }

    /// Sends one request whose body, `len` bytes, is read from `body` as it goes out, and
    /// returns the response with its body still to be read: large uploads and downloads
    /// never sit in memory whole.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &mut dyn Read,
        len: u64,
    ) -> Result<Streamed> {
        let mut s = self.connect()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hutch\r\nContent-Length: {len}\r\nConnection: close\r\n", self.host());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        let sent = std::io::copy(&mut body.take(len), &mut s)?;
        s.flush()?;
        if sent != len {
            // The server still waits for the rest: hanging up makes it drop the request.
            bail!("the request body ended after {sent} of {len} bytes");
        }
        let mut reader = BufReader::with_capacity(1 << 16, s);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("bad response from the server: {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok());
        let body = match (chunked, length) {
            (true, _) => Body::Chunked {
                left: 0,
                done: false,
            },
            (false, Some(left)) if method != "HEAD" => Body::Length { left },
            (false, _) => Body::Plain,
        };
        Ok(Streamed {
            status,
            headers,
            reader,
            body,
        })
    }

    /// A JSON request; LXD's error envelope becomes an error with its message.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Envelope> {
        let data = body
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        let raw = self.raw(
            method,
            path,
            &[("Content-Type", "application/json".into())],
            &data,
        )?;
        parse_envelope(&raw)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        Ok(self.request("GET", path, None)?.metadata)
    }

    /// Sends a request that creates an operation and waits for it to end.
    pub fn wait_op(&self, env: &Envelope) -> Result<Value> {
        self.wait_op_progress(env, None)
    }

    /// Waits for an operation, showing the `*_progress` of its metadata on `progress`
    /// as it changes (from the events websocket, so plain waits cost nothing more).
    pub fn wait_op_progress(&self, env: &Envelope, progress: Option<&Progress>) -> Result<Value> {
        if env.operation.is_empty() {
            return Ok(env.metadata.clone());
        }
        let watcher = progress
            .filter(|p| p.enabled())
            .and_then(|p| self.watch_operation(&env.operation, p.clone()));
        let op = self.wait_interruptible(&env.operation, progress);
        if let Some(p) = progress {
            p.done("");
        }
        drop(watcher);
        let op = op?;
        if op["status_code"].as_u64().unwrap_or(0) >= 400 {
            bail!("{}", op["err"].as_str().unwrap_or("operation failed"));
        }
        Ok(op)
    }

    /// Waits for the operation at `op_url` to end, a second at a time so that a Ctrl-C
    /// is seen: the first cancels the operation (`DELETE`) and waits for its end, a second
    /// ends the client at once (see `interrupt`).
    fn wait_interruptible(&self, op_url: &str, progress: Option<&Progress>) -> Result<Value> {
        let ctrl_c = crate::interrupt::Watch::install();
        let mut cancelling = false;
        loop {
            let op = self.get(&format!("{op_url}/wait?timeout=1"))?;
            let code = op["status_code"].as_u64().unwrap_or(0);
            // 1xx: still going; 200 Success, 400 Failure, 401 Cancelled.
            if code >= 200 {
                if cancelling && code == hutch_api::operation::StatusCode::Cancelled as u64 {
                    eprintln!("Operation cancelled");
                    return Err(crate::interrupt::Interrupted.into());
                }
                return Ok(op);
            }
            if !cancelling && ctrl_c.pressed() {
                cancelling = true;
                if let Some(p) = progress {
                    p.done("");
                }
                eprintln!("Cancelling...");
                if let Err(e) = self.request("DELETE", op_url, None) {
                    eprintln!("Error: {e} (Ctrl-C again to stop waiting)");
                }
            }
        }
    }

    /// A thread that feeds the operation events of `op_url` to `progress` until it is
    /// done; None when the events websocket cannot be opened (then no progress shows).
    fn watch_operation(
        &self,
        op_url: &str,
        progress: Progress,
    ) -> Option<std::thread::JoinHandle<()>> {
        let id = op_url.rsplit('/').next().unwrap_or_default().to_string();
        let mut ws = self.websocket("/1.0/events?type=operation").ok()?;
        // A read timeout lets the thread notice the end of the wait.
        ws.get_ref()
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .ok()?;
        Some(std::thread::spawn(move || {
            while !progress.is_done() {
                match ws.read() {
                    Ok(tungstenite::Message::Text(text)) => {
                        let Ok(event) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        if event["metadata"]["id"] == id.as_str() {
                            progress.update_op(&event["metadata"]["metadata"]);
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }))
    }

    /// A request whose operation is waited for.
    pub fn run(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let env = self.request(method, path, body)?;
        self.wait_op(&env)
    }

    /// Opens a websocket on `path`.
    pub fn websocket(&self, path: &str) -> Result<tungstenite::WebSocket<Conn>> {
        let stream = self.connect()?;
        let url = format!("ws://{}{path}", self.host());
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .map_err(|e| anyhow!("websocket {path}: {e}"))?;
        Ok(ws)
    }
}

pub fn parse_envelope(raw: &Raw) -> Result<Envelope> {
    let env: Envelope = serde_json::from_slice(&raw.body)
        .map_err(|_| anyhow!("unexpected response from the server (HTTP {})", raw.status))?;
    if env.kind == hutch_api::ResponseType::Error {
        bail!("{}", env.error);
    }
    Ok(env)
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_as_lxc_reads_them() {
        let hp = |s: &str| split_host_port(s);
        assert_eq!(hp("h"), Some(("h".into(), 8443)));
        assert_eq!(hp("h:1"), Some(("h".into(), 1)));
        assert_eq!(hp("[fd00::1]:2"), Some(("fd00::1".into(), 2)));
        assert_eq!(hp("[fd00::1]"), Some(("fd00::1".into(), 8443)));
        assert_eq!(hp("fd00::1"), Some(("fd00::1".into(), 8443)));
        assert_eq!(hp(""), None);
        assert_eq!(hp(":1"), None);
        assert_eq!(hp("h:x"), None);
        let id = hutch_tls::Identity::generate(hutch_tls::Kind::Client).unwrap();
        let tls = hutch_tls::client_config(hutch_tls::ServerTrust::System, Some(&id)).unwrap();
        let h = Https::new("https://[::1]:9/x", tls.clone()).unwrap();
        assert_eq!(h.url, "https://[::1]:9");
        assert_eq!(
            Https::new("https://h", tls.clone()).unwrap().url,
            "https://h:8443"
        );
        assert!(Https::new("http://h", tls).is_err());
    }
}
