//! The daemons the benchmark drives: a hutchd it starts in its own directory, or an LXD
//! set up beforehand.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// `--daemon-log`: where the hutchd the bench starts write their stderr (else nowhere).
pub(crate) static DAEMON_LOG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A daemon to drive: a hutchd this harness started, or an LXD daemon set up beforehand.
pub(crate) struct Target {
    /// `hutchd` or `lxd`, for the table.
    pub(crate) label: &'static str,
    pub(crate) dir: PathBuf,
    pub(crate) bin: PathBuf,
    /// The daemon's pid, for its memory.
    pub(crate) pid: u32,
}

/// Resident memory of process `pid`, in MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") / 1024.0
}

/// Resident anonymous memory (heap, stacks) of process `pid`, in MiB: RSS without the
/// pages of its binary and libraries, whose count depends on how much of the binary the
/// page cache holds (a freshly copied binary is mapped in more by fault-around).
pub(crate) fn rss_anon_mib(pid: u32) -> f64 {
    status_kib(pid, "RssAnon:") / 1024.0
}

/// A kB field of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Open file descriptors of process `pid`.
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of process `pid`.
pub(crate) fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Target {
    /// The client command for `client` ("hutch" or "lxc"; LXD is driven by lxc only).
    pub(crate) fn cmd(&self, client: &str, args: &[&str]) -> Command {
        let mut c = if client == "lxc" || self.label == "lxd" {
            Command::new("lxc")
        } else {
            Command::new(self.bin.join("hutch"))
        };
        c.args(args)
            .env("HUTCH_DIR", &self.dir)
            .env("LXD_DIR", &self.dir)
            .env("LXD_CONF", self.dir.join("lxc-conf"))
            .env("HOME", &self.dir);
        if let Some(ca) = crate::remote::CA_FILE.get() {
            // Trust the bench's image server (Go's lxc and hutch both read it).
            c.env("SSL_CERT_FILE", ca);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a client command and returns how long it took.
    pub(crate) fn time(&self, client: &str, args: &[&str]) -> Result<Duration> {
        if let Some(pause) = crate::PAUSE.get().filter(|p| !p.is_zero()) {
            std::thread::sleep(*pause);
        }
        let start = Instant::now();
        let out = self.cmd(client, args).output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "{} {client} {args:?}: {}",
                self.label,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }
}

/// A daemon in its own directory, torn down (containers, network, pool mount, files) on
/// drop. Its containers have a NIC on its own bridge, as after a real `init --auto`.
pub(crate) struct Daemon {
    pub(crate) dir: PathBuf,
    pub(crate) child: Child,
    pub(crate) bin: PathBuf,
    pub(crate) bridge: String,
    pub(crate) target: Target,
}

impl Daemon {
    pub(crate) fn start(bin: &Path, driver: &str) -> Result<Self> {
        Self::start_named(bin, driver, "")
    }

    /// A daemon whose directory and bridge carry `name` too (a second daemon beside one).
    pub(crate) fn start_named(bin: &Path, driver: &str, name: &str) -> Result<Self> {
        let dir = PathBuf::from(format!(
            "/tmp/hutch-bench-{}-{driver}{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let hutchd = bin.join("hutchd");
        let bridge = format!("hb{name}{}", std::process::id() % 100_000);
        let ok = Command::new(&hutchd)
            .arg("--dir")
            .arg(&dir)
            .args(["init", "--auto", "--storage-backend", driver])
            .args(["--network-bridge", &bridge])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("hutchd init --storage-backend {driver} failed");
        }
        let mut hutchd = Command::new(&hutchd);
        if let Some(ca) = crate::remote::CA_FILE.get() {
            hutchd.env("SSL_CERT_FILE", ca);
        }
        let log = match DAEMON_LOG.get() {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Stdio::null(),
        };
        let child = hutchd
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let d = Daemon {
            target: Target {
                label: "hutchd",
                dir: dir.clone(),
                bin: bin.to_path_buf(),
                pid: child.id(),
            },
            dir,
            child,
            bin: bin.to_path_buf(),
            bridge,
        };
        for _ in 0..100 {
            if std::os::unix::net::UnixStream::connect(d.dir.join("unix.socket")).is_ok() {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("hutchd did not come up")
    }

    pub(crate) fn cmd(&self, client: &str, args: &[&str]) -> Command {
        self.target.cmd(client, args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("containers")) {
            for e in entries.flatten() {
                let _ = Command::new(self.bin.join("hutchd"))
                    .arg("--dir")
                    .arg(&self.dir)
                    .args(["container", "stop", "--force"])
                    .arg(e.file_name())
                    .stdout(Stdio::null())
                    .status();
            }
        }
        // The network: its dnsmasq, its bridge, and the daemon's nftables tables.
        let net = self.dir.join("networks").join(&self.bridge);
        if let Ok(pid) = std::fs::read_to_string(net.join("dnsmasq.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let tables = Command::new("nft").args(["list", "tables"]).output();
        let prefix = format!("{}_", hutch_prefix(&self.dir).replace('-', "_"));
        for line in tables
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            if let Some(t) = line
                .split_whitespace()
                .nth(2)
                .filter(|t| t.starts_with(&prefix))
            {
                let _ = Command::new("nft")
                    .args(["delete", "table", "inet", t])
                    .status();
            }
        }
        let _ = nix::mount::umount2(
            &self.dir.join("storage-pools/default"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// hutchd's per-directory prefix of cgroups and nftables tables.
pub(crate) fn hutch_prefix(dir: &Path) -> String {
    let mut hash: u32 = 2166136261;
    for b in dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ *b as u32).wrapping_mul(16777619);
    }
    format!("hutch-{hash:08x}")
}

/// The storage driver of the pool of the default profile's root disk of an LXD daemon.
pub(crate) fn lxd_driver(lxd: &Target) -> Result<String> {
    let pool = Command::new("lxc")
        .args(["profile", "device", "get", "default", "root", "pool"])
        .env("LXD_DIR", &lxd.dir)
        .output()?;
    let pool = String::from_utf8_lossy(&pool.stdout).trim().to_string();
    let out = Command::new("lxc")
        .args(["storage", "get", &pool, "--property", "driver"])
        .env("LXD_DIR", &lxd.dir)
        .output()?;
    let driver = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if driver.is_empty() {
        let show = Command::new("lxc")
            .args(["storage", "show", &pool])
            .env("LXD_DIR", &lxd.dir)
            .output()?;
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        return Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("driver: "))
            .unwrap_or_default()
            .to_string());
    }
    Ok(driver)
}

/// Puts IPv4 forwarding back as it was: the daemons' NAT bridges turn it on, as LXD's do,
/// and a benchmark leaves the host as it found it.
pub(crate) struct ForwardingGuard(pub(crate) Option<String>);

pub(crate) const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

impl Drop for ForwardingGuard {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write(IP_FORWARD, v.trim());
        }
    }
}
