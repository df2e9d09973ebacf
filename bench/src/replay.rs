//! `lxc list`'s own share: a server that only replays answers recorded from hutchd, from
//! memory, over a unix socket. Timing `lxc list` against it measures what lxc takes to
//! decode and draw N instances when the server costs nothing: the floor any server can
//! reach through lxc.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::target::Target;

/// The requests LXD 5.0's `lxc list` makes (the server, then one `recursion=2` listing).
const LIST_PATHS: [&str; 2] = ["/1.0", "/1.0/instances?filter=&recursion=2"];

/// The body of one GET on `socket` (HTTP/1.1, `Connection: close`).
pub(crate) fn fetch(socket: &Path, path: &str) -> Result<Vec<u8>> {
    let answer = crate::api_load::get_answer(socket, path)?;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    let body = &answer[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return dechunk(body);
    }
    Ok(body.to_vec())
}

/// A chunked body, joined.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = std::str::from_utf8(&body[..line])?
            .split(';')
            .next()
            .unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16)?;
        body = &body[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).context("a short chunk")?);
        body = body.get(size + 2..).context("a chunk without its end")?;
    }
}

/// A server on `<dir>/unix.socket` answering each recorded path with its body (and 404
/// otherwise); stopped and its directory removed on drop.
pub(crate) struct Replay {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Replay {
    pub(crate) fn start(dir: &Path, answers: HashMap<String, Vec<u8>>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("unix.socket");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(answers);
        let stopping = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let answers = answers.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &answers);
                });
            }
        });
        Ok(Replay {
            dir: dir.to_path_buf(),
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = UnixStream::connect(self.dir.join("unix.socket"));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Answers the requests of one connection (kept alive, as Go's client keeps it).
fn serve(conn: UnixStream, answers: &HashMap<String, Vec<u8>>) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let path = request
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        // Headers up to the blank line; a GET has no body.
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            close |= line.eq_ignore_ascii_case("connection: close\r\n");
        }
        let (status, body) = match answers.get(&path) {
            Some(body) => ("200 OK", body.as_slice()),
            None => (
                "404 Not Found",
                &br#"{"type":"error","error":"not found","error_code":404}"#[..],
            ),
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        writer.write_all(body)?;
        if close {
            return Ok(());
        }
    }
}

/// `runs` timings of `lxc list` against a replay of the answers `t` gave to lxc's requests.
pub(crate) fn lxc_list_floor(t: &Target, runs: usize) -> Result<Vec<Duration>> {
    let socket = t.dir.join("unix.socket");
    let mut answers = HashMap::new();
    for path in LIST_PATHS {
        answers.insert(path.to_string(), fetch(&socket, path)?);
    }
    let dir = PathBuf::from(format!("/tmp/hutch-bench-replay-{}", std::process::id()));
    let _replay = Replay::start(&dir, answers)?;
    let replayed = Target {
        label: "replay",
        dir: dir.clone(),
        bin: t.bin.clone(),
        pid: 0,
    };
    (0..runs).map(|_| replayed.time("lxc", &["list"])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_answers_recorded_paths_and_404_otherwise() {
        let dir = std::env::temp_dir().join(format!("replay-test-{}", std::process::id()));
        let replay = Replay::start(
            &dir,
            HashMap::from([("/1.0".to_string(), b"{\"a\":1}".to_vec())]),
        )
        .unwrap();
        assert_eq!(
            fetch(&dir.join("unix.socket"), "/1.0").unwrap(),
            b"{\"a\":1}"
        );
        assert!(fetch(&dir.join("unix.socket"), "/nope").is_err());
        drop(replay);
        assert!(!dir.exists());
    }

    #[test]
    fn a_chunked_body_is_joined() {
        let body = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), b"abcde");
    }
}
