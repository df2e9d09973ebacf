//! Shared harness for the end-to-end tests: root checks, test images, unique names, and
//! guards that leave the machine as the test found it even when the test panics.

pub mod daemon;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use daemon::{busybox_image, TestDaemon};

/// True when running as root. Otherwise prints why the test is skipped, or panics when
/// `HUTCH_REQUIRED_TESTS=1` (CI) so that nothing is skipped silently there.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("HUTCH_REQUIRED_TESTS").as_deref() == Ok("1") {
        panic!("{test} needs root and HUTCH_REQUIRED_TESTS=1 forbids skipping it");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// The built `hutchd` binary: `$HUTCH_HUTCHD`, else `target/<profile>/hutchd` next to
/// the test executable's `deps/` directory.
pub fn hutchd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HUTCH_HUTCHD") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("hutchd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hutchd` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

fn run_script(script: &str, dest: &Path) -> anyhow::Result<()> {
    let out = Command::new("bash")
        .arg(images_dir().join(script))
        .arg(dest)
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{script} {} failed: {}",
            dest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Builds a busybox-init root filesystem at `dest` (offline, from busybox-static).
pub fn busybox_rootfs(dest: &Path) -> anyhow::Result<()> {
    run_script("busybox.sh", dest)
}

/// Unpacks a Debian 12 (systemd) root filesystem at `dest`; debootstraps it once and
/// caches it in `$HUTCH_TEST_CACHE` (default /var/cache/hutch-tests).
pub fn debian_rootfs(dest: &Path) -> anyhow::Result<()> {
    run_script("debian.sh", dest)
}

/// A short name (at most 15 characters: fits a host name and an interface name), unique
/// across the tests and processes running now.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = (std::process::id() as u64) << 20 ^ (n as u64) << 12 ^ (nanos as u64 >> 8);
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect::<String>()
        .to_lowercase();
    let mut suffix = String::new();
    let mut v = mix;
    for _ in 0..(14 - prefix.len()).min(9) {
        suffix.push(char::from_digit((v % 36) as u32, 36).unwrap());
        v /= 36;
    }
    format!("{prefix}-{suffix}")
}

/// A temporary directory under /tmp. On drop it kills processes that live in it, unmounts
/// everything below it (deepest first) and removes it, even after a panic.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> Self {
        let path = PathBuf::from(format!("/tmp/hutch-test-{}", unique_name("d")));
        fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids = processes_under(&self.path);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for m in mounts_under(&self.path) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = parse_mounts_under(&text, dir);
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn parse_mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let oct: String = chars.clone().take(3).collect();
            if oct.len() == 3 && oct.chars().all(|d| ('0'..='7').contains(&d)) {
                out.push(u8::from_str_radix(&oct, 8).unwrap_or(b'?') as char);
                for _ in 0..3 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Processes whose root, cwd or executable lies below `dir`, or whose command line names it.
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let p = entry.path();
        let inside = ["root", "cwd", "exe"].iter().any(|l| {
            fs::read_link(p.join(l)).is_ok_and(|t| t.starts_with(dir) && t != Path::new("/"))
        });
        let named = fs::read(p.join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle));
        if inside || named {
            out.push(pid);
        }
    }
    out
}

/// Every cgroup directory for the relative path `rel` on this host.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut bases = vec![root.to_path_buf()];
    if !root.join("cgroup.controllers").exists() {
        bases = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
    }
    bases
        .into_iter()
        .map(|b| b.join(rel))
        .filter(|p| p.exists())
        .collect()
}

/// Removes a test's cgroup (and its then-empty parent) in every hierarchy on drop, after
/// killing what is left in it: the safety net behind the runtime's own cleanup.
pub struct CgroupGuard {
    rel: String,
}

impl CgroupGuard {
    pub fn new(rel: &str) -> Self {
        CgroupGuard {
            rel: rel.to_string(),
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for dir in cgroup_dirs(&self.rel) {
            let _ = fs::write(dir.join("freezer.state"), "THAWED");
            let _ = fs::write(dir.join("cgroup.freeze"), "0");
            remove_cgroup_tree(&dir);
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    let children: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    for c in children {
        remove_cgroup_tree(&c);
    }
    for _ in 0..100 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Panics, listing them, if mounts or processes under `dir` or cgroups named `cgroup_rel`
/// are left.
pub fn assert_no_leftovers(dir: &Path, cgroup_rel: &str) {
    let mounts = mounts_under(dir);
    let cgroups = cgroup_dirs(cgroup_rel);
    let procs = processes_under(dir);
    assert!(
        mounts.is_empty() && cgroups.is_empty() && procs.is_empty(),
        "leftovers: mounts {mounts:?}, cgroups {cgroups:?}, processes {procs:?}"
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
    use super::*;

    #[test]
    fn unique_names_are_short_distinct_and_hostname_safe() {
        let a = unique_name("busybox");
        let b = unique_name("busybox");
        assert_ne!(a, b);
        for n in [&a, &b, &unique_name("x")] {
            assert!(n.len() <= 15, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.ends_with('-'), "{n}");
        }
    }

    #[test]
    fn mounts_under_a_dir_are_found_with_escapes() {
        let info = "1 0 0:1 / / rw - ext4 /dev/vda rw\n\
                    2 1 0:2 / /tmp/t/a\\040b rw - tmpfs tmpfs rw\n\
                    3 1 0:3 / /tmp/tt rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mounts_under(info, Path::new("/tmp/t")),
            vec![PathBuf::from("/tmp/t/a b")]
        );
    }
}
