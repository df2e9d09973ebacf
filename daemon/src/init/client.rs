//! A small HTTP/1.1 client for a running hutchd's unix socket: one request per
//! connection (`Connection: close`), bodies framed by length, by chunks or by the end of
//! the connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{InitError, Transport};

/// How long one request may take: pool creation formats a loop file.
const REQUEST_LIMIT: Duration = Duration::from_secs(600);

/// The API of the hutchd that serves `socket`.
#[derive(Debug, Clone)]
pub struct SocketApi {
    socket: PathBuf,
}

impl SocketApi {
    pub fn new(socket: &Path) -> Self {
        SocketApi {
            socket: socket.to_path_buf(),
        }
    }

    /// Whether a daemon answers on the socket (a `GET /1.0`).
    pub fn answers(&self) -> bool {
        self.send("GET", "/1.0", None)
            .is_ok_and(|(status, _)| status == 200)
    }
}

impl Transport for SocketApi {
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), InitError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|source| InitError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let io = |source| InitError::Io {
            socket: self.socket.clone(),
            source,
        };
        s.set_read_timeout(Some(REQUEST_LIMIT)).map_err(io)?;
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: unix.socket\r\nUser-Agent: hutchd-init\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len()
        );
        s.write_all(head.as_bytes())
            .and_then(|()| s.write_all(data.as_bytes()))
            .map_err(io)?;
        read_response(BufReader::new(s)).map_err(io)
    }
}

/// Reads a status line, headers and the body (by `Content-Length`, chunked, or to the end).
fn read_response(mut r: impl BufRead) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {:?}", line.trim_end())))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the headers ended early".into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| bad(format!("bad length {v:?}")))?,
                );
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if n == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn bodies_framed_every_way_are_read() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcdEXTRA".as_slice();
        assert_eq!(read_response(plain).unwrap(), (200, b"abcd".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                .as_slice();
        assert_eq!(read_response(chunked).unwrap(), (404, b"abcde".to_vec()));
        let to_end = b"HTTP/1.1 405 Method Not Allowed\r\n\r\nall of it".as_slice();
        assert_eq!(read_response(to_end).unwrap(), (405, b"all of it".to_vec()));
        assert!(read_response(b"garbage\r\n\r\n".as_slice()).is_err());
        assert!(
            read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort".as_slice()).is_err()
        );
    }

    #[test]
    fn a_request_goes_out_whole_with_its_json_body() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("unix.socket");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.strip_prefix("Content-Length: ") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
            let answer = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
            r.get_mut().write_all(answer).unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        let api = SocketApi::new(&sock);
        let (status, body) = api
            .send(
                "POST",
                "/1.0/networks",
                Some(&serde_json::json!({"name": "n"})),
            )
            .unwrap();
        assert_eq!((status, body.as_slice()), (201, b"{}".as_slice()));
        let (head, sent) = server.join().unwrap();
        assert!(
            head.starts_with("POST /1.0/networks HTTP/1.1\r\n"),
            "{head}"
        );
        assert_eq!(sent, r#"{"name":"n"}"#);
        drop(dir);
        let err = api.send("GET", "/1.0", None).unwrap_err();
        assert!(
            crate::chain(&err).starts_with("failed to reach hutchd at "),
            "{}",
            crate::chain(&err)
        );
        assert!(!api.answers());
    }
}
