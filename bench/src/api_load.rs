//! API latency under many concurrent clients: each client thread opens its own connections
//! to the daemon's unix socket and asks, in turn, for the instance list, one instance's state
//! and one instance's config, all clients at once. Plain HTTP/1.1 with `Connection: close`,
//! so every request is timed from connect to the last byte of the answer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What the clients measured together.
pub(crate) struct Load {
    /// Every request's latency, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Requests answered with anything but 200 (or not answered).
    pub(crate) errors: usize,
}

impl Load {
    /// The `q`-quantile latency (0.0..=1.0).
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// One GET on `socket` with `Connection: close`: the whole answer, headers and body.
pub(crate) fn get_answer(socket: &Path, path: &str) -> Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket).context("connect")?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: hutch\r\nUser-Agent: hutch-bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    Ok(answer)
}

/// One GET: the status code and how long it took.
fn get(socket: &Path, path: &str) -> Result<(u16, Duration)> {
    let start = Instant::now();
    let answer = get_answer(socket, path)?;
    let took = start.elapsed();
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, took))
}

/// One `GET /1.0/metrics`, timed; an answer other than 200 is an error.
pub(crate) fn scrape(socket: &Path) -> Result<Duration> {
    match get(socket, "/1.0/metrics")? {
        (200, took) => Ok(took),
        (status, _) => bail!("GET /1.0/metrics on {}: HTTP {status}", socket.display()),
    }
}

/// `clients` threads, started together, each making `rounds` rounds of list, state and
/// config requests about `instances` (taken in turn, a different one per client).
pub(crate) fn run(
    socket: &Path,
    instances: &[String],
    clients: usize,
    rounds: usize,
) -> Result<Load> {
    if instances.is_empty() {
        bail!("no instances to ask about");
    }
    let start = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let start = start.clone();
            let socket: PathBuf = socket.to_path_buf();
            let names: Vec<String> = (0..rounds)
                .map(|r| instances[(c * rounds + r) % instances.len()].clone())
                .collect();
            std::thread::spawn(move || {
                start.wait();
                let mut out = Vec::new();
                for name in &names {
                    for path in [
                        "/1.0/instances".to_string(),
                        format!("/1.0/instances/{name}/state"),
                        format!("/1.0/instances/{name}"),
                    ] {
                        out.push(get(&socket, &path).ok());
                    }
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for h in handles {
        for answer in h.join().map_err(|_| anyhow::anyhow!("client thread"))? {
            match answer {
                Some((200, took)) => latencies.push(took),
                Some((_, took)) => {
                    errors += 1;
                    latencies.push(took);
                }
                None => errors += 1,
            }
        }
    }
    latencies.sort();
    Ok(Load { latencies, errors })
}
