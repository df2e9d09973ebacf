//! `hutch import [REMOTE:] FILE [NAME] [--storage POOL]`: uploads a backup tarball (from
//! `hutch export` or `lxc export`) as `lxc import` does, streamed from the file, with the
//! upload's progress (bytes, rate, time left) on stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::remote::split;
use crate::http::{parse_envelope, Client};

#[derive(Args)]
pub struct ImportArgs {
    /// [REMOTE:] FILE [NAME]: the remote to import into (as `lxc import`), the backup
    /// file, and the instance's name (the backup's own when not given; may carry the
    /// remote as REMOTE:NAME).
    #[arg(num_args = 1..=3, required = true)]
    args: Vec<String>,
    /// Storage pool to use.
    #[arg(short, long)]
    storage: Option<String>,
}

/// What the positional arguments say: the remote (prefix), the file and the name.
fn parse(args: &[String]) -> Result<(Option<String>, String, Option<String>)> {
    let (remote, rest) = match args.split_first() {
        Some((first, rest)) if first.ends_with(':') && !rest.is_empty() => {
            (Some(first.clone()), rest)
        }
        _ => (None, args),
    };
    match rest {
        [file] => Ok((remote, file.clone(), None)),
        [file, name] => Ok((remote, file.clone(), Some(name.clone()))),
        _ => bail!("Invalid number of arguments"),
    }
}

pub fn import(c: &Client, a: &ImportArgs) -> Result<()> {
    let (remote, file, name) = parse(&a.args)?;
    let (client, name) = match (remote, name) {
        (Some(r), Some(n)) if n.contains(':') => bail!("Two remotes given: {r} and {n}"),
        (Some(r), n) => (split(c, &r)?.0, n.unwrap_or_default()),
        (None, Some(n)) => split(c, &n)?,
        (None, None) => (c.clone(), String::new()),
    };
    let path = Path::new(&file);
    let f = std::fs::File::open(path).with_context(|| format!("open {file}"))?;
    let len = f.metadata()?.len();
    let mut headers = vec![("Content-Type", "application/octet-stream".to_string())];
    if let Some(pool) = a.storage.as_ref().filter(|p| !p.is_empty()) {
        headers.push(("X-LXD-pool", pool.clone()));
    }
    if !name.is_empty() {
        headers.push(("X-LXD-name", name));
    }
    let show = !crate::output::quiet() && std::io::stderr().is_terminal();
    let mut body = Counting::new(f, len, show);
    let resp = client.send("POST", "/1.0/instances", &headers, &mut body, len)?;
    body.done();
    let env = parse_envelope(&resp.into_raw()?)?;
    client.wait_op(&env)?;
    Ok(())
}

/// The file as it is read for the upload, drawing `Importing instance: 45% (12.34MB of
/// 27.1MB, 5.2MB/s, 3s left)` on stderr at most twice a second.
struct Counting<R> {
    inner: R,
    total: u64,
    sent: u64,
    start: Instant,
    last: Instant,
    show: bool,
}

impl<R: Read> Counting<R> {
    fn new(inner: R, total: u64, show: bool) -> Self {
        let now = Instant::now();
        Counting {
            inner,
            total,
            sent: 0,
            start: now,
            last: now,
            show,
        }
    }

    fn draw(&mut self) {
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = (self.sent as f64 / secs) as u64;
        let percent = (self.sent * 100).checked_div(self.total).unwrap_or(100);
        let left = match rate {
            0 => String::new(),
            r => format!(", {}s left", self.total.saturating_sub(self.sent) / r),
        };
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r\x1b[KImporting instance: {percent}% ({} of {}, {}/s{left})",
            size(self.sent),
            size(self.total),
            size(rate)
        );
        let _ = err.flush();
    }

    fn done(&mut self) {
        if self.show {
            self.draw();
            eprintln!();
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        if self.show && self.last.elapsed() >= Duration::from_millis(500) {
            self.last = Instant::now();
            self.draw();
        }
        Ok(n)
    }
}

/// Bytes as lxc prints them (`12.34MB`).
fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_read_as_lxc_import_reads_them() {
        assert_eq!(parse(&v(&["b.tgz"])).unwrap(), (None, "b.tgz".into(), None));
        assert_eq!(
            parse(&v(&["h2:", "b.tgz", "c2"])).unwrap(),
            (Some("h2:".into()), "b.tgz".into(), Some("c2".into()))
        );
        assert_eq!(
            parse(&v(&["b.tgz", "h2:c2"])).unwrap(),
            (None, "b.tgz".into(), Some("h2:c2".into()))
        );
        assert!(parse(&v(&["a", "b", "c"])).is_err());
        assert_eq!(size(999), "999B");
        assert_eq!(size(12_340_000), "12.34MB");
    }
}
