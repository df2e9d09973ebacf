//! `hutch export [REMOTE:]NAME [FILE]`, as `lxc export`: make a stored backup (expiring in
//! a day, so a failed run leaves nothing for long), download its tarball to FILE
//! (`backup.tar.gz` by default, `-` for stdout) while the server produces it, then delete
//! the backup. Progress (bytes, rate, time left) goes to stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::http::{encode, parse_envelope, Client};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The instance: [REMOTE:]NAME.
    pub name: String,
    /// Where to write the tarball (`-` for stdout).
    pub file: Option<String>,
    /// Leave the snapshots out.
    #[arg(long)]
    pub instance_only: bool,
    /// The storage driver's own format (btrfs send streams): faster, imports only onto
    /// the same driver.
    #[arg(long)]
    pub optimized_storage: bool,
    /// gzip (default), xz, zstd or none; empty: the server's backups.compression_algorithm.
    #[arg(long)]
    pub compression: Option<String>,
    /// When the stored backup expires if the export fails: a duration (`30m`, `2h`, `1d`)
    /// or an RFC 3339 time. Default: a day.
    #[arg(long)]
    pub expiry: Option<String>,
}

pub fn export(default: &Client, args: &ExportArgs) -> Result<()> {
    let (client, name) = super::remote::split(default, &args.name)?;
    let expires_at = expiry(args.expiry.as_deref())?;
    let req = json!({
        "name": "",
        "expires_at": expires_at,
        "instance_only": args.instance_only,
        "container_only": args.instance_only,
        "optimized_storage": args.optimized_storage,
        "compression_algorithm": args.compression.clone().unwrap_or_default(),
    });
    let base = format!("/1.0/instances/{}/backups", encode(&name));
    let env = client.request("POST", &base, Some(&req))?;
    let op = client.wait_op(&env)?;
    // As lxc: the name is the backups resource less its `/1.0/backups/` prefix.
    let backup = op["resources"]["backups"][0]
        .as_str()
        .and_then(|r| r.strip_prefix("/1.0/backups/"))
        .map(str::to_string)
        .context("the server named no backup")?;
    let url = format!("{base}/{}", encode(&backup));
    let downloaded = download(
        &client,
        &url,
        args.file.as_deref().unwrap_or("backup.tar.gz"),
    );
    // The backup goes whether the download worked or not.
    let deleted = client
        .request("DELETE", &url, None)
        .and_then(|env| client.wait_op(&env).map(|_| ()));
    downloaded?;
    deleted?;
    if args.file.as_deref() != Some("-") {
        eprintln!("Backup exported successfully!");
    }
    Ok(())
}

/// The tarball into `file`; a failure removes what was written.
fn download(client: &Client, url: &str, file: &str) -> Result<()> {
    let mut resp = client.send(
        "GET",
        &format!("{url}/export"),
        &[],
        &mut std::io::empty(),
        0,
    )?;
    if resp.status != 200 {
        parse_envelope(&resp.into_raw()?)?;
        bail!("export failed");
    }
    let operation = resp.header("x-hutch-operation").map(str::to_string);
    let mut progress = Line::new(client.clone(), operation);
    let mut copy = |out: &mut dyn Write| -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = resp.read(&mut buf).context("the download failed")?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            progress.add(n as u64);
        }
        out.flush()?;
        Ok(())
    };
    if file == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let res = copy(&mut lock);
        progress.clear();
        return res;
    }
    let path = Path::new(file);
    let mut f = std::fs::File::create(path).with_context(|| format!("create {file}"))?;
    let res = copy(&mut f);
    progress.clear();
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

/// LXD's `expires_at`: now plus a duration, or the time given; a day by default.
fn expiry(given: Option<&str>) -> Result<String> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let secs = match given {
        None => 86_400,
        Some(t) if time::OffsetDateTime::parse(t, rfc3339).is_ok() => return Ok(t.to_string()),
        Some(t) => hutch_api::schedule::parse_expiry(t)
            .map_err(|e| anyhow::anyhow!("invalid expiry {t:?}: {e}"))?,
    };
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64);
    Ok(at.format(rfc3339)?)
}

/// One progress line on stderr: bytes received and rate, and the server's percentage and
/// time left (from the export's operation) when it reports them.
struct Line {
    client: Client,
    operation: Option<String>,
    enabled: bool,
    bytes: u64,
    start: Instant,
    last: Option<Instant>,
    drawn: usize,
}

impl Line {
    fn new(client: Client, operation: Option<String>) -> Self {
        Line {
            client,
            operation,
            enabled: !crate::output::quiet() && std::io::stderr().is_terminal(),
            bytes: 0,
            start: Instant::now(),
            last: None,
            drawn: 0,
        }
    }

    fn add(&mut self, n: u64) {
        self.bytes += n;
        if !self.enabled
            || self
                .last
                .is_some_and(|l| l.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        let rate = self.bytes as f64 / self.start.elapsed().as_secs_f64().max(0.001);
        let mut text = format!(
            "Exporting the backup: {} ({}/s)",
            size(self.bytes as f64),
            size(rate)
        );
        if let Some(p) = self.server_progress() {
            text.push_str(&p);
        }
        eprint!("\r{text:<width$}", width = self.drawn);
        self.drawn = text.len();
    }

    /// `, 45% read, 12s left` from the operation's metadata.
    fn server_progress(&self) -> Option<String> {
        let op: Value = self.client.get(self.operation.as_deref()?).ok()?;
        let p = &op["metadata"]["progress"];
        let percent = p["percent"].as_str()?;
        let eta = p["eta"].as_str().unwrap_or("?");
        Some(format!(", {percent}% read, {eta}s left"))
    }

    fn clear(&self) {
        if self.enabled && self.drawn > 0 {
            eprint!("\r{:width$}\r", "", width = self.drawn);
        }
    }
}

fn size(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let (mut v, mut u) = (bytes, 0);
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_takes_durations_and_times() {
        assert_eq!(
            expiry(Some("2030-01-01T00:00:00Z")).unwrap(),
            "2030-01-01T00:00:00Z"
        );
        assert!(expiry(Some("1d")).unwrap().starts_with("20"));
        assert!(expiry(Some("soon")).is_err());
        assert!(expiry(None).is_ok());
    }
}
