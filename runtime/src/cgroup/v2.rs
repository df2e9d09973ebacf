//! cgroup v2 (the unified hierarchy): one directory per container, controllers enabled
//! down the tree, cgroup.freeze and cgroup.kill.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::dir_of;
use super::values::{cpuset_for, max_or, render_cpu_max, stat_field};
use super::*;

/// Controllers a container's cgroup wants enabled from its parents.
const WANTED: &[&str] = &["cpuset", "cpu", "io", "memory", "pids"];

#[derive(Debug)]
pub struct V2Cgroup {
    hierarchy: Hierarchy,
    rel: String,
    dir: PathBuf,
    fs: Arc<dyn CgroupFs>,
}

impl V2Cgroup {
    pub fn new(layout: &CgroupLayout, rel: &str, fs: Arc<dyn CgroupFs>) -> Self {
        let hierarchy = layout
            .v2()
            .cloned()
            .expect("a unified layout has a v2 hierarchy");
        let dir = dir_of(&hierarchy, rel);
        V2Cgroup {
            hierarchy,
            rel: rel.to_string(),
            dir,
            fs,
        }
    }

    fn has(&self, controller: &str) -> bool {
        self.fs.exists(&self.dir.join(format!("{controller}.max")))
            || self
                .fs
                .read(&self.dir.join("cgroup.controllers"))
                .map(|c| c.split_whitespace().any(|x| x == controller))
                .unwrap_or(false)
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
}

/// Enables in `parent` the wanted controllers it has.
fn enable_controllers(fs: &dyn CgroupFs, parent: &Path) -> Result<()> {
    let available = fs
        .read(&parent.join("cgroup.controllers"))
        .unwrap_or_default();
    let enable: Vec<String> = available
        .split_whitespace()
        .filter(|c| WANTED.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if enable.is_empty() {
        return Ok(());
    }
    write(
        fs,
        &parent.join("cgroup.subtree_control"),
        &enable.join(" "),
    )
}

pub(super) fn freeze_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    write(fs, &dir.join("cgroup.freeze"), "1")?;
    wait_for("the container to freeze", || is_frozen_dir(fs, dir))
}

pub(super) fn thaw_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<()> {
    if !fs.exists(&dir.join("cgroup.freeze")) {
        return Ok(());
    }
    write(fs, &dir.join("cgroup.freeze"), "0")
}

pub(super) fn is_frozen_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<bool> {
    let events = read(fs, &dir.join("cgroup.events"))?;
    Ok(stat_field(&events, "frozen") == Some(1))
}

impl CgroupDriver for V2Cgroup {
    fn create(&self) -> Result<()> {
        let fs = self.fs.as_ref();
        // The root enables controllers for its children; then each level we make.
        enable_controllers(fs, &self.hierarchy.mountpoint)?;
        make_levels(fs, &self.hierarchy.mountpoint, &self.rel, |_, _| Ok(()))?;
        // Every level above the container passes the controllers down (levels may be shared
        // with other containers and made earlier; enabling again is harmless).
        for level in self.dir.ancestors().skip(1) {
            if level == self.hierarchy.mountpoint || !level.starts_with(&self.hierarchy.mountpoint)
            {
                break;
            }
            enable_controllers(fs, level)?;
        }
        Ok(())
    }

    fn apply_limits(&self, limits: &Limits) -> Result<()> {
        let fs = self.fs.as_ref();
        if limits.memory.is_some() {
            self.need("memory")?;
        }
        if self.has("memory") {
            write(fs, &self.dir.join("memory.max"), &max_or(limits.memory))?;
            let swap = self.dir.join("memory.swap.max");
            if fs.exists(&swap) {
                let v = if !limits.memory_swap && limits.memory.is_some() {
                    "0"
                } else {
                    "max"
                };
                write(fs, &swap, v)?;
            }
        }
        if limits.cpu_set.is_some() || limits.cpu_count.is_some() {
            self.need("cpuset")?;
            let parent = self.dir.parent().unwrap_or(&self.dir).to_path_buf();
            let parent_cpus = read(fs, &parent.join("cpuset.cpus.effective"))?;
            let value =
                cpuset_for(limits, &parent_cpus).map_err(|reason| RuntimeError::CgroupValue {
                    path: self.dir.clone(),
                    key: "cpuset.cpus".into(),
                    value: reason,
                })?;
            write(
                fs,
                &self.dir.join("cpuset.cpus"),
                value.as_deref().unwrap_or(""),
            )?;
        } else if fs
            .read(&self.dir.join("cpuset.cpus"))
            .is_ok_and(|c| !c.trim().is_empty())
        {
            // An empty cpuset inherits the parent's; a lone newline is how to write one.
            write(fs, &self.dir.join("cpuset.cpus"), "\n")?;
        }
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

    fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        delegate_dir(self.fs.as_ref(), &self.dir, uid, gid)
    }

    fn container_mounts(&self) -> Vec<CgroupMountStep> {
        vec![CgroupMountStep::Cgroup2 { dir: String::new() }]
    }

    fn usage(&self) -> Result<CgroupUsage> {
        let fs = self.fs.as_ref();
        let get = |f: &str| read_u64(fs, &self.dir.join(f));
        let cpu = fs
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
            cpu_time_ns: cpu * 1000,
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
        let kill = self.dir.join("cgroup.kill");
        if fs.exists(&kill) {
            write(fs, &kill, "1")?;
        }
        kill_until_empty(fs, &self.dir)
    }

    fn destroy(&self) -> Result<()> {
        remove_tree(self.fs.as_ref(), &self.hierarchy.mountpoint, &self.rel)
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}
