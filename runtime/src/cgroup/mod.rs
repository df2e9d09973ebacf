//! Cgroups v1 (including hybrid hosts) and v2 behind one trait, [`CgroupDriver`], over a
//! tiny file seam ([`CgroupFs`]) so the logic is unit-tested without root.
//!
//! Layout: `fs` (the seam, real and fake), `layout` (which hierarchies the host mounts),
//! `values` (pure rendering and parsing of cgroup file values), `tree` (steps shared by
//! both drivers), `v1` and `v2` (the drivers). [`open`] is the one factory.

pub mod devices_bpf;
mod fs;
mod layout;
mod tree;
mod v1;
mod v2;
mod values;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use fs::{CgroupFs, FakeCgroupFs, RealCgroupFs};
pub use layout::{CgroupLayout, Hierarchy, CGROUP_ROOT};

use crate::error::{Result, RuntimeError};
use crate::spec::Limits;

/// How long freezing or emptying a cgroup may take before it is an error.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Leaf used for exec'd processes when the container's own cgroup cannot take them
/// (LXC uses `.lxc` the same way).
pub const EXEC_LEAF: &str = ".hutch-exec";

/// What the container sees at /sys/fs/cgroup, applied in order after it joined its
/// cgroup namespace. `dir` is relative to /sys/fs/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMountStep {
    /// A tmpfs on /sys/fs/cgroup to hold the v1 hierarchies.
    Tmpfs,
    /// A fresh cgroup2 mount ("" = /sys/fs/cgroup itself); inside the cgroup namespace its
    /// root is the container's cgroup.
    Cgroup2 { dir: String },
    /// The container's own directory of a v1 hierarchy, bound from the host.
    Bind { source: PathBuf, dir: String },
    /// A name for one controller of a co-mounted hierarchy (cpu -> cpu,cpuacct).
    Symlink { name: String, target: String },
    /// Make the tmpfs read-only once everything is mounted.
    ReadOnlyTmpfs,
}

/// Resource usage of a container. Counters the host cannot report are 0 or `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Memory in use now, page cache included.
    pub memory_bytes: u64,
    /// The most memory ever in use (v2 memory.peak is missing on kernels before 5.19).
    pub memory_peak_bytes: Option<u64>,
    /// Swap in use, where swap accounting is on.
    pub swap_bytes: Option<u64>,
    /// CPU time used by all processes, ever.
    pub cpu_time_ns: u64,
    /// Processes (tasks, with pids.current) in the cgroup.
    pub processes: u64,
}

/// One container's cgroup.
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// Creates the cgroup in every hierarchy (idempotent): v1 cpusets of new levels get
    /// their parent's cpus and mems and the devices allowlist is set; v2 ancestors pass the
    /// controllers down.
    fn create(&self) -> Result<()>;
    /// Applies limits; `None` resets a limit to unlimited. Works on a running container.
    fn apply_limits(&self, limits: &Limits) -> Result<()>;
    /// Moves a process into the container's cgroup in every hierarchy.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Like `add_process`, falling back to the [`EXEC_LEAF`] where the container's own
    /// cgroup cannot take processes (v2, once systemd inside enabled controllers).
    fn add_exec_process(&self, pid: i32) -> Result<()>;
    /// The container's directory on the cgroup2 hierarchy, where one is (unified hosts, and
    /// hybrid ones beside the v1 controllers): a process can be born there by clone3
    /// (`sys::fork_into_cgroup`) instead of moving in.
    fn v2_dir(&self) -> Option<PathBuf>;
    /// Where a devices allowlist must be a BPF program (a unified host has no devices
    /// controller): the container's cgroup2 directory. `None` where v1's controller does it.
    fn device_filter_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Changes the v1 devices allowlist from [`DEVICE_ALLOW`](values::DEVICE_ALLOW) and
    /// `old` to it and `new` (extra `c 4:1 rwm` rules, devices given to the container).
    /// Nothing where there is no devices controller (v2: see [`set_device_rules`]).
    fn update_device_rules(&self, _old: &[String], _new: &[String]) -> Result<()> {
        Ok(())
    }
    /// `add_process` for a process born in `v2_dir`: only the v1 hierarchies are left.
    fn add_process_v1(&self, pid: i32) -> Result<()>;
    /// `add_exec_process` for a process born in `v2_dir` (or its exec leaf).
    fn add_exec_process_v1(&self, pid: i32) -> Result<()>;
    /// Hands the cgroup to the container's root, so a nested systemd can manage it.
    fn delegate(&self, uid: u32, gid: u32) -> Result<()>;
    /// The container's view of /sys/fs/cgroup.
    fn container_mounts(&self) -> Vec<CgroupMountStep>;
    /// Current resource usage.
    fn usage(&self) -> Result<CgroupUsage>;
    /// Freezes every process and waits until they are (bounded; undone on timeout).
    fn freeze(&self) -> Result<()>;
    /// Lets frozen processes run again.
    fn thaw(&self) -> Result<()>;
    /// Whether the cgroup is completely frozen.
    fn is_frozen(&self) -> Result<bool>;
    /// Every pid in the cgroup and its children, sorted.
    fn procs(&self) -> Result<Vec<i32>>;
    /// Kills every process in the cgroup and waits until it is empty (bounded).
    fn kill_all(&self) -> Result<()>;
    /// Removes the cgroup and its children everywhere, then the empty parents made for it.
    /// Idempotent.
    fn destroy(&self) -> Result<()>;
    /// The container's directory in each hierarchy.
    fn paths(&self) -> Vec<PathBuf>;
}

/// Gives a container, created or running, the devices of `new` (extra allowlist rules
/// beyond the standard ones) in place of those of `old`: the v1 controller's lists, or on
/// cgroup2 a new BPF filter in place of the old.
pub fn set_device_rules(cg: &dyn CgroupDriver, old: &[String], new: &[String]) -> Result<()> {
    match cg.device_filter_dir() {
        Some(dir) => devices_bpf::replace(&dir, new),
        None => cg.update_device_rules(old, new),
    }
}

/// Whether `rule` is a devices allowlist rule (`c 1:3 rwm`, `b 8:* r`).
pub fn valid_device_rule(rule: &str) -> bool {
    devices_bpf::is_rule(rule)
}

/// The one factory: v2 on a unified host, v1 (with the hybrid v2 beside) otherwise.
/// `rel_path` ("hutch-1a2b3c/web") is placed under the root of each hierarchy.
pub fn open(layout: &CgroupLayout, rel_path: &str, fs: Arc<dyn CgroupFs>) -> Box<dyn CgroupDriver> {
    let rel = rel_path.trim_matches('/');
    match layout.unified_hierarchy() {
        Some(h) => Box::new(v2::V2Cgroup::new(h, rel, fs)),
        None => Box::new(v1::V1Cgroup::new(layout, rel, fs)),
    }
}

fn io_err(action: &'static str, path: &Path, e: io::Error) -> RuntimeError {
    RuntimeError::io(action, path, e)
}

/// Writes one cgroup file, naming it on failure.
fn write(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<()> {
    fs.write(path, value).map_err(|e| io_err("write", path, e))
}

/// Reads one cgroup file, trimmed, naming it on failure.
fn read(fs: &dyn CgroupFs, path: &Path) -> Result<String> {
    fs.read(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io_err("read", path, e))
}

/// A number from a one-value file; `None` when missing or not a number.
fn read_u64(fs: &dyn CgroupFs, path: &Path) -> Option<u64> {
    fs.read(path).ok()?.trim().parse().ok()
}

/// Unit tests of both drivers over the fake filesystem, and the one root test on the host.
#[cfg(test)]
mod tests;
