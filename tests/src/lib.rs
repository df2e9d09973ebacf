//! Shared harness for the end-to-end tests: root checks, the `hutchd` binary, test images,
//! unique names, polling, and guards that leave the machine as the test found it even when
//! the test panics.

mod cgroup;
pub mod daemon;
pub mod etcd;
mod hutch_client;
pub mod image_server;
mod images;
pub mod lxd;
pub mod network;
pub mod registry;
mod run;
pub mod terminal;
mod testdir;
pub mod token_server;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use cgroup::{cgroup_dirs, CgroupGuard};
pub use daemon::{busybox_image, TestDaemon, Via};
pub use hutch_client::HutchClient;
pub use image_server::{Fault, ImageServer, TestCa};
pub use images::{busybox_rootfs, debian_rootfs, split_busybox};
pub use lxd::ReferenceLxd;
pub use run::{output_within, COMMAND_LIMIT};
pub use terminal::TerminalSession;
pub use testdir::{mounts_under, processes_under, TestDir};

/// True when running as root. Otherwise prints why the test is skipped, or panics when
/// `HUTCH_REQUIRED_TESTS=1` (CI) so that nothing is skipped silently there.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("HUTCH_REQUIRED_TESTS").as_deref() == Ok("1") {
        panic!("{test} needs root and HUTCH_REQUIRED_TESTS=1 forbids skipping it");
    }
    skipped(test, "needs root");
    false
}

/// Says by name that `test` does not run (all or part of it) here, and why: on stderr, and
/// as a line of the file `$HUTCH_SKIP_LOG` names, which `scripts/test.sh` prints after the
/// run, so that CI's log lists every test that did not run.
pub fn skipped(test: &str, why: &str) {
    eprintln!("skipping {test}: {why}");
    if let Ok(path) = std::env::var("HUTCH_SKIP_LOG") {
        use std::io::Write;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut log) = log {
            // One write per line: tests run in parallel.
            let _ = log.write_all(format!("{test}: {why}\n").as_bytes());
        }
    }
}

/// The built `hutchd` binary: `$HUTCH_HUTCHD`, else `target/<profile>/hutchd` next to
/// the test executable's `deps/` directory.
pub fn hutchd_bin() -> PathBuf {
    built_bin("hutchd", "HUTCH_HUTCHD")
}

/// The built `hutchd-helper` (monitors, exec helpers, proxies), beside `hutchd`.
pub fn helper_bin() -> PathBuf {
    hutchd_bin().with_file_name("hutchd-helper")
}

/// The built `hutch` client: `$HUTCH_HUTCH`, else `target/<profile>/hutch`.
pub fn hutch_bin() -> PathBuf {
    built_bin("hutch", "HUTCH_HUTCH")
}

fn built_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A short name (at most 15 characters, so it fits a host name and an interface name) of
/// lowercase letters, digits and one dash, unique across the tests and processes running
/// now: `<prefix>-<9 base-36 digits>` of the pid, a per-process counter and clock bits.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut prefix: String = prefix
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect::<String>()
        .to_ascii_lowercase();
    if prefix.is_empty() {
        prefix.push('t');
    }
    // pid_max is at most 2^22, so pid and counter never overlap: names differ for 16384
    // calls per process, and the clock bits make a wrapped counter collide only by chance.
    let pid = u64::from(std::process::id()) & 0x3f_ffff;
    let count = u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)) & 0x3fff;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let clock = u64::from(nanos >> 10) & 0x3ff;
    let mut v = pid | (count << 22) | (clock << 36);
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(v % 36) as usize];
        v /= 36;
    }
    format!("{prefix}-{}", String::from_utf8_lossy(&digits))
}

/// Panics, listing them, if mounts or processes under `dir` or cgroups named `cgroup_rel`
/// are left. A process that is still exiting gets a moment to finish.
pub fn assert_no_leftovers(dir: &Path, cgroup_rel: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut mounts, mut cgroups, mut procs);
    loop {
        mounts = mounts_under(dir);
        cgroups = cgroup_dirs(cgroup_rel);
        procs = processes_under(dir);
        let clean = mounts.is_empty() && cgroups.is_empty() && procs.is_empty();
        if clean || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        mounts.is_empty() && cgroups.is_empty() && procs.is_empty(),
        "leftovers of {}: mounts {mounts:?}, cgroups {cgroups:?}, processes {procs:?}",
        dir.display()
    );
}

/// Polls `f` until it returns true; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn assert_name_format(n: &str) {
        assert!(n.len() <= 15, "{n} is too long");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n} has other characters"
        );
        assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
    }

    #[test]
    fn unique_names_are_short_distinct_and_hostname_safe() {
        let names: Vec<String> = (0..2000).map(|_| unique_name("busybox")).collect();
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        for n in &names {
            assert_name_format(n);
            assert!(n.starts_with("busyb-"), "{n}");
        }
        for p in ["", "x", "Deb_12!", "a-b"] {
            assert_name_format(&unique_name(p));
        }
        assert!(unique_name("").starts_with("t-"));
        assert!(unique_name("Deb_12!").starts_with("deb12-"));
    }

    #[test]
    fn wait_until_returns_once_true() {
        let mut n = 0;
        wait_until("three polls", Duration::from_secs(5), || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for never")]
    fn wait_until_panics_naming_what() {
        wait_until("never", Duration::from_millis(30), || false);
    }
}
