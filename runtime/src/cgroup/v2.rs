//! cgroup v2 (the unified hierarchy): one directory per container, controllers enabled
//! down the tree, cgroup.freeze and cgroup.kill.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::dir_of;
use super::tree::{
    add_to_dir_or_leaf, delegate_dir, freeze_file, kill_until_empty, make_levels, procs_below,
    remove_tree,
};
use super::values::{cpuset_for, max_or, render_cpu_max, stat_field};
use super::{
    read, read_u64, write, CgroupDriver, CgroupFs, CgroupMountStep, CgroupUsage, Hierarchy,
    SETTLE_TIMEOUT,
};
use crate::error::{Result, RuntimeError};
use crate::spec::Limits;

/// Controllers a container's cgroup wants from its parents: those limits use, and the
/// rest a nested systemd or container manager may want to hand on.
const WANTED: &[&str] = &[
    "cpuset", "cpu", "io", "memory", "pids", "hugetlb", "rdma", "misc",
];

/// The v2 driver: the container's one directory in the unified tree.
#[derive(Debug)]
pub struct V2Cgroup {
    mountpoint: PathBuf,
    rel: String,
    dir: PathBuf,
    fs: Arc<dyn CgroupFs>,
}

impl V2Cgroup {
    /// The driver for `rel` under the v2 hierarchy `h`.
    pub fn new(h: &Hierarchy, rel: &str, fs: Arc<dyn CgroupFs>) -> Self {
        V2Cgroup {
            mountpoint: h.mountpoint.clone(),
            rel: rel.to_string(),
            dir: dir_of(h, rel),
            fs,
        }
    }

    /// Whether the container's cgroup got `controller` from its parent.
    fn has(&self, controller: &str) -> bool {
        self.fs
            .read(&self.dir.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == controller))
    }

    fn need(&self, controller: &str) -> Result<()> {
        if self.has(controller) {
            Ok(())
        } else {
            Err(RuntimeError::CgroupControllerMissing {
                controller: controller.into(),
            })
        }
    }

    fn apply_memory(&self, limits: &Limits) -> Result<()> {
        if limits.memory.is_some() {
            self.need("memory")?;
        }
        if !self.has("memory") {
            return Ok(());
        }
        let fs = self.fs.as_ref();
        write(fs, &self.dir.join("memory.max"), &max_or(limits.memory))?;
        // memory.swap.max is missing without swap accounting; then there is nothing to cap.
        let swap = self.dir.join("memory.swap.max");
        if fs.exists(&swap) {
            let no_swap = !limits.memory_swap && limits.memory.is_some();
            write(fs, &swap, if no_swap { "0" } else { "max" })?;
        }
        Ok(())
    }

    fn apply_cpuset(&self, limits: &Limits) -> Result<()> {
        let fs = self.fs.as_ref();
        let file = self.dir.join("cpuset.cpus");
        if limits.cpu_set.is_none() && limits.cpu_count.is_none() {
            // An empty cpuset.cpus uses the parent's; a lone newline is how to write one
            // (an empty write never reaches the kernel).
            if fs.read(&file).is_ok_and(|c| !c.trim().is_empty()) {
                write(fs, &file, "\n")?;
            }
            return Ok(());
        }
        self.need("cpuset")?;
        let parent = self.dir.parent().unwrap_or(&self.dir);
        let parent_cpus = read(fs, &parent.join("cpuset.cpus.effective"))?;
        let value =
            cpuset_for(limits, &parent_cpus).map_err(|reason| RuntimeError::CgroupValue {
                path: self.dir.clone(),
                key: "cpuset.cpus".into(),
                value: reason,
            })?;
        write(fs, &file, value.as_deref().unwrap_or("\n"))
    }
}

/// Enables in `parent`'s cgroup.subtree_control the wanted controllers it has and has not
/// enabled yet, one write each so a failure names the controller's file.
fn enable_controllers(fs: &dyn CgroupFs, parent: &Path) -> Result<()> {
    let available = fs
        .read(&parent.join("cgroup.controllers"))
        .unwrap_or_default();
    let enabled = fs
        .read(&parent.join("cgroup.subtree_control"))
        .unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for c in available.split_whitespace() {
        if WANTED.contains(&c) && !enabled.contains(&c) {
            write(fs, &parent.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
    }
    Ok(())
}

pub(super) fn freeze_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    freeze_file(
        fs,
        &dir.join("cgroup.freeze"),
        ("1", "0"),
        SETTLE_TIMEOUT,
        || is_frozen_dir(fs, dir),
    )
}

pub(super) fn thaw_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    let file = dir.join("cgroup.freeze");
    if !fs.exists(&file) {
        return Ok(());
    }
    write(fs, &file, "0")
}

/// Frozen means every process stopped, which cgroup.events says, not cgroup.freeze.
pub(super) fn is_frozen_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<bool> {
    let events = read(fs, &dir.join("cgroup.events"))?;
    Ok(stat_field(&events, "frozen") == Some(1))
}

impl CgroupDriver for V2Cgroup {
    fn create(&self) -> Result<()> {
        let fs = self.fs.as_ref();
        make_levels(fs, &self.mountpoint, &self.rel, |_, _, _| Ok(()))?;
        // Top-down: a level can only enable what its parent enabled for it. Levels shared
        // with other containers are visited again; enabled controllers are skipped.
        let mut levels: Vec<&Path> = self
            .dir
            .ancestors()
            .skip(1)
            .take_while(|l| l.starts_with(&self.mountpoint))
            .collect();
        levels.reverse();
        for level in levels {
            enable_controllers(fs, level)?;
        }
        Ok(())
    }

    fn apply_limits(&self, limits: &Limits) -> Result<()> {
        self.apply_memory(limits)?;
        self.apply_cpuset(limits)?;
        let fs = self.fs.as_ref();
        if limits.cpu_allowance.is_some() {
            self.need("cpu")?;
        }
        if self.has("cpu") {
            write(fs, &self.dir.join("cpu.max"), &render_cpu_max(limits))?;
        }
        if limits.processes.is_some() {
            self.need("pids")?;
        }
        if self.has("pids") {
            write(fs, &self.dir.join("pids.max"), &max_or(limits.processes))?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write(
            self.fs.as_ref(),
            &self.dir.join("cgroup.procs"),
            &pid.to_string(),
        )
    }

    fn add_exec_process(&self, pid: i32) -> Result<()> {
        add_to_dir_or_leaf(self.fs.as_ref(), &self.dir, pid)
    }

    fn v2_dir(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }

    fn device_filter_dir(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }

    fn add_process_v1(&self, _pid: i32) -> Result<()> {
        Ok(())
    }

    fn add_exec_process_v1(&self, _pid: i32) -> Result<()> {
        Ok(())
    }

    fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        delegate_dir(self.fs.as_ref(), &self.dir, uid, gid)
    }

    fn container_mounts(&self) -> Vec<CgroupMountStep> {
        vec![CgroupMountStep::Cgroup2 { dir: String::new() }]
    }

    fn usage(&self) -> Result<CgroupUsage> {
        let fs = self.fs.as_ref();
        let get = |f: &str| read_u64(fs, &self.dir.join(f));
        let cpu_usec = fs
            .read(&self.dir.join("cpu.stat"))
            .ok()
            .and_then(|s| stat_field(&s, "usage_usec"))
            .unwrap_or(0);
        let processes = match get("pids.current") {
            Some(n) => n,
            None => self.procs()?.len() as u64,
        };
        Ok(CgroupUsage {
            memory_bytes: get("memory.current").unwrap_or(0),
            memory_peak_bytes: get("memory.peak"),
            swap_bytes: get("memory.swap.current"),
            cpu_time_ns: cpu_usec.saturating_mul(1000),
            processes,
        })
    }

    fn freeze(&self) -> Result<()> {
        freeze_dir(self.fs.as_ref(), &self.dir)
    }

    fn thaw(&self) -> Result<()> {
        thaw_dir(self.fs.as_ref(), &self.dir)
    }

    fn is_frozen(&self) -> Result<bool> {
        is_frozen_dir(self.fs.as_ref(), &self.dir)
    }

    fn procs(&self) -> Result<Vec<i32>> {
        procs_below(self.fs.as_ref(), &self.dir)
    }

    fn kill_all(&self) -> Result<()> {
        let fs = self.fs.as_ref();
        // cgroup.kill (5.14+) kills the whole subtree at once, frozen or not.
        let kill = self.dir.join("cgroup.kill");
        if fs.exists(&kill) {
            write(fs, &kill, "1")?;
        }
        kill_until_empty(fs, &self.dir, SETTLE_TIMEOUT)
    }

    fn destroy(&self) -> Result<()> {
        remove_tree(self.fs.as_ref(), &self.mountpoint, &self.rel)
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}
