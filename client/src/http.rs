//! A small synchronous HTTP/1.1 client for hutchd's unix socket, with LXD's envelope,
//! operations and websockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

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

/// A raw response, its body read whole (`Streamed` reads it as it comes).
pub struct Raw {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A response whose body is read as a stream (`Read`), chunked or not.
pub struct Streamed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<UnixStream>,
    body: Body,
}

/// How the body of a `Streamed` is framed: to the end of the connection (we always send
/// `Connection: close`), or in chunks with `left` bytes of the current one unread.
enum Body {
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
            Body::Plain => self.reader.read(buf),
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

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// Why this remote cannot be used (it is no hutchd), said on the first request.
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
            socket,
            unusable: None,
        }
    }

    /// A client whose every request fails with `why`.
    pub fn unusable(why: &str) -> Self {
        Client {
            socket: PathBuf::new(),
            unusable: Some(why.to_string()),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn connect(&self) -> Result<UnixStream> {
        if let Some(why) = &self.unusable {
            bail!("{why}");
        }
        UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "cannot reach hutchd at {} (is it running?)",
                self.socket.display()
            )
        })
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
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: unix.socket\r\nUser-Agent: hutch\r\nContent-Length: {len}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        let sent = std::io::copy(&mut body.take(len), &mut s)?;
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
            .ok_or_else(|| anyhow!("bad response from hutchd: {status_line:?}"))?;
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
        let body = if chunked {
            Body::Chunked {
                left: 0,
                done: false,
            }
        } else {
            Body::Plain
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
        let op = self.get(&format!("{}/wait?timeout=-1", env.operation));
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
    pub fn websocket(&self, path: &str) -> Result<tungstenite::WebSocket<UnixStream>> {
        let stream = self.connect()?;
        let url = format!("ws://unix.socket{path}");
        let (ws, _) = tungstenite::client(url.as_str(), stream)
            .map_err(|e| anyhow!("websocket {path}: {e}"))?;
        Ok(ws)
    }
}

pub fn parse_envelope(raw: &Raw) -> Result<Envelope> {
    let env: Envelope = serde_json::from_slice(&raw.body)
        .map_err(|_| anyhow!("unexpected response from hutchd (HTTP {})", raw.status))?;
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
