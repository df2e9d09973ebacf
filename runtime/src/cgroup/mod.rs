//! Cgroups v1 (including hybrid hosts) and v2 behind one trait, [`CgroupDriver`], over a
//! tiny file seam ([`CgroupFs`]) so the logic is unit-tested without root.

mod fs;
mod layout;
mod v1;
mod v2;
mod values;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use fs::{CgroupFs, FakeCgroupFs, RealCgroupFs};
pub use layout::{CgroupLayout, Hierarchy, CGROUP_ROOT};

use crate::error::{Result, RuntimeError};
use crate::spec::Limits;

/// How long freezing or emptying a cgroup may take before it is an error.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Leaf used for exec'd processes when the container's own cgroup cannot take them.
pub const EXEC_LEAF: &str = ".hutch-exec";

/// What the container sees at /sys/fs/cgroup, applied in order after it joined its
/// cgroup namespace. `dir` is relative to /sys/fs/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMountStep {
    /// A tmpfs on /sys/fs/cgroup to hold the v1 hierarchies.
    Tmpfs,
    /// A fresh cgroup2 mount; inside the cgroup namespace its root is the container's cgroup.
    Cgroup2 { dir: String },
    /// The container's own directory of a v1 hierarchy.
    Bind { source: PathBuf, dir: String },
    /// A name for one controller of a co-mounted hierarchy (cpu -> cpu,cpuacct).
    Symlink { name: String, target: String },
    /// Make the tmpfs read-only once everything is mounted.
    ReadOnlyTmpfs,
}

/// Resource usage of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub memory_bytes: u64,
    pub memory_peak_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    pub cpu_time_ns: u64,
    pub processes: u64,
}

/// One container's cgroup.
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// Creates the cgroup in every hierarchy (idempotent).
    fn create(&self) -> Result<()>;
    /// Applies limits; `None` resets a limit to unlimited. Works on a running container.
    fn apply_limits(&self, limits: &Limits) -> Result<()>;
    /// Moves a process into the container's cgroup in every hierarchy.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Like `add_process`, falling back to a leaf where the container's own cgroup
    /// cannot take processes (v2, once systemd inside enabled controllers).
    fn add_exec_process(&self, pid: i32) -> Result<()>;
    /// Hands the cgroup to the container's root, so a nested systemd can manage it.
    fn delegate(&self, uid: u32, gid: u32) -> Result<()>;
    /// The container's view of /sys/fs/cgroup.
    fn container_mounts(&self) -> Vec<CgroupMountStep>;
    fn usage(&self) -> Result<CgroupUsage>;
    /// Freezes every process and waits until they are.
    fn freeze(&self) -> Result<()>;
    fn thaw(&self) -> Result<()>;
    fn is_frozen(&self) -> Result<bool>;
    /// Every pid in the cgroup and its children.
    fn procs(&self) -> Result<Vec<i32>>;
    /// Kills every process in the cgroup and waits until it is empty.
    fn kill_all(&self) -> Result<()>;
    /// Removes the cgroup and its children everywhere, then the empty parents made for it.
    fn destroy(&self) -> Result<()>;
    /// The container's directory in each hierarchy.
    fn paths(&self) -> Vec<PathBuf>;
}

/// The one factory: v2 on a unified host, v1 (with the hybrid v2 beside) otherwise.
pub fn open(layout: &CgroupLayout, rel_path: &str, fs: Arc<dyn CgroupFs>) -> Box<dyn CgroupDriver> {
    if layout.is_unified() {
        Box::new(v2::V2Cgroup::new(layout, rel_path, fs))
    } else {
        Box::new(v1::V1Cgroup::new(layout, rel_path, fs))
    }
}

fn io_err(action: &'static str, path: &Path, e: io::Error) -> RuntimeError {
    RuntimeError::io(action, path, e)
}

/// Writes one cgroup file, naming it on failure.
fn write(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<()> {
    fs.write(path, value).map_err(|e| io_err("write", path, e))
}

fn read(fs: &dyn CgroupFs, path: &Path) -> Result<String> {
    fs.read(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io_err("read", path, e))
}

fn read_u64(fs: &dyn CgroupFs, path: &Path) -> Option<u64> {
    fs.read(path).ok()?.trim().parse().ok()
}

/// Creates each level of `rel` under `mountpoint`; calls `made(parent, dir)` for each new one.
fn make_levels(
    fs: &dyn CgroupFs,
    mountpoint: &Path,
    rel: &str,
    mut made: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    let mut dir = mountpoint.to_path_buf();
    for comp in Path::new(rel).components() {
        let parent = dir.clone();
        dir.push(comp);
        if !fs.exists(&dir) {
            fs.mkdir(&dir)
                .map_err(|e| io_err("create cgroup", &dir, e))?;
            made(&parent, &dir)?;
        }
    }
    Ok(())
}

/// All pids in `dir` and its sub-cgroups.
fn procs_below(fs: &dyn CgroupFs, dir: &Path) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if !fs.exists(&d) {
            continue;
        }
        let procs = fs.read(&d.join("cgroup.procs")).unwrap_or_default();
        out.extend(
            procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
        stack.extend(fs.subdirs(&d).map_err(|e| io_err("list", &d, e))?);
    }
    Ok(out)
}

/// SIGKILLs what is in `dir` until it stays empty.
fn kill_until_empty(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let pids = procs_below(fs, dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::Timeout {
                what: "the cgroup to empty",
                millis: SETTLE_TIMEOUT.as_millis() as u64,
            });
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes `dir` and its children, deepest first, retrying while dying processes linger;
/// then removes the now-empty parents of `rel` up to the mountpoint.
fn remove_tree(fs: &dyn CgroupFs, mountpoint: &Path, rel: &str) -> Result<()> {
    let dir = mountpoint.join(rel);
    let mut order = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        if !fs.exists(&d) {
            continue;
        }
        stack.extend(fs.subdirs(&d).map_err(|e| io_err("list", &d, e))?);
        order.push(d);
    }
    for d in order.iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match fs.rmdir(d) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(io_err("remove cgroup", d, e)),
            }
        }
    }
    let mut parent = dir.parent().map(Path::to_path_buf);
    while let Some(p) = parent {
        if p == mountpoint || !p.starts_with(mountpoint) {
            break;
        }
        // Shared by other containers when not empty: that is fine.
        if fs.rmdir(&p).is_err() {
            break;
        }
        parent = p.parent().map(Path::to_path_buf);
    }
    Ok(())
}

/// Adds `pid` to `dir`, or to its exec leaf when the kernel refuses (no internal processes).
fn add_to_dir_or_leaf(fs: &dyn CgroupFs, dir: &Path, pid: i32) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match fs.write(&procs, &pid.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EOPNOTSUPP)) => {
            let leaf = dir.join(EXEC_LEAF);
            fs.mkdir(&leaf)
                .map_err(|e| io_err("create cgroup", &leaf, e))?;
            write(fs, &leaf.join("cgroup.procs"), &pid.to_string())
        }
        Err(e) => Err(io_err("write", &procs, e)),
    }
}

/// Polls `check` until true or the settle timeout passes.
fn wait_for(what: &'static str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !check()? {
        if Instant::now() > deadline {
            return Err(RuntimeError::Timeout {
                what,
                millis: SETTLE_TIMEOUT.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Files a nested systemd writes in its delegated cgroup.
const DELEGATED_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "tasks",
    "cgroup.clone_children",
    "notify_on_release",
];

fn delegate_dir(fs: &dyn CgroupFs, dir: &Path, uid: u32, gid: u32) -> Result<()> {
    fs.chown(dir, uid, gid)
        .map_err(|e| io_err("chown", dir, e))?;
    for f in DELEGATED_FILES {
        let p = dir.join(f);
        if fs.exists(&p) {
            fs.chown(&p, uid, gid).map_err(|e| io_err("chown", &p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
