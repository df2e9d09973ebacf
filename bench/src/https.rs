//! HTTPS rows: `exec true` and `list` through `lxc` over an HTTPS remote to each target,
//! and `lxc copy` of a stopped 500 MB container from each target to a second daemon of its
//! own kind (a second hutchd, a second LXD), over HTTPS on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::target::{Daemon, Target};

/// The trust password the bench sets on every daemon it reaches over HTTPS.
const PASSWORD: &str = "hutch-bench";

/// The remote every target knows itself by over HTTPS.
const SELF: &str = "self-https";

/// The remote every target knows its copy destination by.
const DEST: &str = "dest-https";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Makes `t` listen on a free loopback port with the bench's trust password; its URL.
fn listen(t: &Target) -> Result<String> {
    let port = free_port()?;
    t.time(
        "lxc",
        &[
            "config",
            "set",
            "core.https_address",
            &format!("127.0.0.1:{port}"),
        ],
    )?;
    t.time("lxc", &["config", "set", "core.trust_password", PASSWORD])?;
    Ok(format!("https://127.0.0.1:{port}"))
}

/// Whether `t` has an HTTPS address.
fn listening(t: &Target) -> Result<bool> {
    let out = t
        .cmd("lxc", &["config", "get", "core.https_address"])
        .stdout(Stdio::piped())
        .output()?;
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// Adds `url` to `from`'s `lxc` remotes as `name`, trusted by password.
fn add_remote(from: &Target, name: &str, url: &str) -> Result<()> {
    let _ = from.time("lxc", &["remote", "remove", name]);
    from.time(
        "lxc",
        &[
            "remote",
            "add",
            name,
            url,
            "--accept-certificate",
            "--password",
            PASSWORD,
        ],
    )
    .map(|_| ())
}

/// `exec true (HTTPS)` and `list (HTTPS)` on each target, A/B.
pub(crate) fn measure(
    targets: &[&Target],
    runs: usize,
    mut record: impl FnMut(&str, Vec<Vec<Duration>>),
) -> Result<()> {
    for t in targets {
        let url = listen(t)?;
        add_remote(t, SELF, &url)?;
        t.time("lxc", &["launch", "bb", "hx"])?;
    }
    let target = format!("{SELF}:hx");
    let all = format!("{SELF}:");
    for (row, args) in [
        (
            "exec true (HTTPS)",
            vec!["exec", target.as_str(), "--", "true"],
        ),
        ("list (HTTPS)", vec!["list", all.as_str()]),
    ] {
        let mut samples = vec![Vec::new(); targets.len()];
        for _ in 0..runs {
            for (i, t) in targets.iter().enumerate() {
                samples[i].push(t.time("lxc", &args)?);
            }
        }
        record(row, samples);
    }
    for t in targets {
        t.time("lxc", &["delete", "hx", "--force"])?;
    }
    Ok(())
}

/// A second LXD in its own directory with a btrfs pool on a loop file, torn down on drop.
pub(crate) struct SecondLxd {
    dir: PathBuf,
    child: Child,
    pub(crate) url: String,
}

impl SecondLxd {
    pub(crate) fn start() -> Result<SecondLxd> {
        let dir = PathBuf::from(format!("/tmp/hutch-bench-lxd2-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("lxd")
            .args(["--group", "root", "--logfile"])
            .arg(dir.join("lxd.log"))
            .env("LXD_DIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start a second lxd")?;
        let mut lxd = SecondLxd {
            dir,
            child,
            url: String::new(),
        };
        lxd.lxd(&["waitready", "--timeout", "60"], "")?;
        let port = free_port()?;
        let preseed = format!(
            "config:\n  core.https_address: 127.0.0.1:{port}\n  core.trust_password: {PASSWORD}\nstorage_pools:\n- name: default\n  driver: btrfs\n  config:\n    size: 6GiB\nprofiles:\n- name: default\n  devices:\n    root:\n      path: /\n      pool: default\n      type: disk\n"
        );
        lxd.lxd(&["init", "--preseed"], &preseed)?;
        lxd.url = format!("https://127.0.0.1:{port}");
        Ok(lxd)
    }

    fn lxd(&self, args: &[&str], stdin: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new("lxd")
            .args(args)
            .env("LXD_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "lxd {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for SecondLxd {
    fn drop(&mut self) {
        let _ = self.lxd(&["shutdown", "--timeout", "30"], "");
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lazily unmounts everything mounted under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `copy 500 MB (HTTPS)`: each target copies a stopped container holding 500 MB of random
/// data to its destination (`dests[i]`, a URL), `lxc copy` in pull mode, A/B.
pub(crate) fn measure_copy(
    targets: &[&Target],
    dests: &[String],
    runs: usize,
    mut record: impl FnMut(&str, Vec<Vec<Duration>>),
) -> Result<()> {
    for (t, url) in targets.iter().zip(dests) {
        // The destination pulls from the source's HTTPS address (set by `measure` when it
        // ran first).
        if !listening(t)? {
            listen(t)?;
        }
        add_remote(t, DEST, url)?;
        t.time("lxc", &["launch", "bb", "big"])?;
        t.time(
            "lxc",
            &[
                "exec",
                "big",
                "--",
                "dd",
                "if=/dev/urandom",
                "of=/big",
                "bs=1M",
                "count=500",
            ],
        )?;
        t.time("lxc", &["stop", "big", "--force"])?;
    }
    let mut samples = vec![Vec::new(); targets.len()];
    for run in 0..runs.min(3) {
        for (i, t) in targets.iter().enumerate() {
            let name = format!("{DEST}:big{run}");
            samples[i].push(t.time("lxc", &["copy", "big", &name])?);
            t.time("lxc", &["delete", &name])?;
        }
    }
    record("copy 500 MB (HTTPS)", samples);
    for t in targets {
        t.time("lxc", &["delete", "big"])?;
    }
    Ok(())
}

/// A second hutchd for the copy rows, on `driver`.
pub(crate) fn second_hutchd(bin: &Path, driver: &str) -> Result<(Daemon, String)> {
    let d = Daemon::start_named(bin, driver, "dest")?;
    let url = listen(&d.target)?;
    Ok((d, url))
}
