//! cgroup v1, including hybrid hosts where an (often controller-less) v2 tree sits at
//! /sys/fs/cgroup/unified: per-controller hierarchies, each with the container's directory.

use std::path::PathBuf;
use std::sync::Arc;

use super::layout::dir_of;
use super::values::{cpuset_for, stat_field};
use super::*;

/// Devices every container may use (v1 devices controller).
const DEVICE_ALLOW: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:229 rwm",
    "c 10:200 rwm",
];

#[derive(Debug)]
pub struct V1Cgroup {
    layout: CgroupLayout,
    rel: String,
    fs: Arc<dyn CgroupFs>,
}

impl V1Cgroup {
    pub fn new(layout: &CgroupLayout, rel: &str, fs: Arc<dyn CgroupFs>) -> Self {
        V1Cgroup {
            layout: layout.clone(),
            rel: rel.to_string(),
            fs,
        }
    }

    fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.layout.v1(controller).map(|h| dir_of(h, &self.rel))
    }

    fn file(&self, controller: &str, name: &str) -> Option<PathBuf> {
        self.dir(controller).map(|d| d.join(name))
    }

    fn apply_memory(&self, limits: &Limits) -> Result<()> {
        let Some(dir) = self.dir("memory") else {
            return match limits.memory {
                Some(_) => Err(RuntimeError::CgroupControllerMissing {
                    controller: "memory".into(),
                }),
                None => Ok(()),
            };
        };
        let fs = self.fs.as_ref();
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        let has_memsw = fs.exists(&memsw);
        // memsw must never be below the memory limit: lift it first, set memory, then lower.
        if has_memsw {
            write(fs, &memsw, "-1")?;
        }
        let limit = limits
            .memory
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-1".into());
        write(fs, &dir.join("memory.limit_in_bytes"), &limit)?;
        if has_memsw && !limits.memory_swap && limits.memory.is_some() {
            write(fs, &memsw, &limit)?;
        }
        Ok(())
    }

    fn apply_cpu(&self, limits: &Limits) -> Result<()> {
        let fs = self.fs.as_ref();
        if limits.cpu_set.is_some() || limits.cpu_count.is_some() || self.dir("cpuset").is_some() {
            if let Some(dir) = self.dir("cpuset") {
                let parent = dir.parent().unwrap_or(&dir).to_path_buf();
                let parent_cpus = read(fs, &parent.join("cpuset.effective_cpus"))
                    .or_else(|_| read(fs, &parent.join("cpuset.cpus")))?;
                let value = cpuset_for(limits, &parent_cpus).map_err(|reason| {
                    RuntimeError::CgroupValue {
                        path: dir.clone(),
                        key: "cpuset.cpus".into(),
                        value: reason,
                    }
                })?;
                write(
                    fs,
                    &dir.join("cpuset.cpus"),
                    value.as_deref().unwrap_or(&parent_cpus),
                )?;
            } else {
                return Err(RuntimeError::CgroupControllerMissing {
                    controller: "cpuset".into(),
                });
            }
        }
        match (self.dir("cpu"), limits.cpu_allowance) {
            (Some(dir), Some(a)) => {
                write(fs, &dir.join("cpu.cfs_period_us"), &a.period_us.to_string())?;
                write(fs, &dir.join("cpu.cfs_quota_us"), &a.quota_us.to_string())
            }
            (Some(dir), None) => write(fs, &dir.join("cpu.cfs_quota_us"), "-1"),
            (None, Some(_)) => Err(RuntimeError::CgroupControllerMissing {
                controller: "cpu".into(),
            }),
            (None, None) => Ok(()),
        }
    }

    /// The freezer to use: v1's, else cgroup.freeze of the hybrid v2 tree.
    fn freezer(&self) -> Result<(PathBuf, bool)> {
        if let Some(f) = self.file("freezer", "freezer.state") {
            return Ok((f, false));
        }
        match self.layout.v2() {
            Some(h) => Ok((dir_of(h, &self.rel), true)),
            None => Err(RuntimeError::CgroupControllerMissing {
                controller: "freezer".into(),
            }),
        }
    }

    /// The hierarchy used to list processes: any will do, all hold every process.
    fn primary(&self) -> PathBuf {
        ["pids", "memory", "freezer"]
            .iter()
            .find_map(|c| self.dir(c))
            .unwrap_or_else(|| dir_of(&self.layout.hierarchies[0], &self.rel))
    }
}

impl CgroupDriver for V1Cgroup {
    fn create(&self) -> Result<()> {
        let fs = self.fs.as_ref();
        for h in &self.layout.hierarchies {
            let cpuset = h.has("cpuset");
            let devices = h.has("devices");
            let leaf = dir_of(h, &self.rel);
            make_levels(fs, &h.mountpoint, &self.rel, |parent, dir| {
                if cpuset {
                    // A new cpuset is empty and refuses tasks until given cpus and mems.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = read(fs, &parent.join(f))?;
                        write(fs, &dir.join(f), &v)?;
                    }
                }
                if devices && dir == leaf {
                    write(fs, &dir.join("devices.deny"), "a")?;
                    for rule in DEVICE_ALLOW {
                        write(fs, &dir.join("devices.allow"), rule)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn apply_limits(&self, limits: &Limits) -> Result<()> {
        self.apply_memory(limits)?;
        self.apply_cpu(limits)?;
        match (self.dir("pids"), limits.processes) {
            (Some(dir), p) => write(
                self.fs.as_ref(),
                &dir.join("pids.max"),
                &super::values::max_or(p),
            ),
            (None, Some(_)) => Err(RuntimeError::CgroupControllerMissing {
                controller: "pids".into(),
            }),
            (None, None) => Ok(()),
        }
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for h in &self.layout.hierarchies {
            write(
                self.fs.as_ref(),
                &dir_of(h, &self.rel).join("cgroup.procs"),
                &pid.to_string(),
            )?;
        }
        Ok(())
    }

    fn add_exec_process(&self, pid: i32) -> Result<()> {
        for h in &self.layout.hierarchies {
            add_to_dir_or_leaf(self.fs.as_ref(), &dir_of(h, &self.rel), pid)?;
        }
        Ok(())
    }

    fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        for h in &self.layout.hierarchies {
            delegate_dir(self.fs.as_ref(), &dir_of(h, &self.rel), uid, gid)?;
        }
        Ok(())
    }

    fn container_mounts(&self) -> Vec<CgroupMountStep> {
        let mut steps = vec![CgroupMountStep::Tmpfs];
        for h in &self.layout.hierarchies {
            let name = h
                .mountpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if h.v2 {
                steps.push(CgroupMountStep::Cgroup2 { dir: name });
                continue;
            }
            steps.push(CgroupMountStep::Bind {
                source: dir_of(h, &self.rel),
                dir: name.clone(),
            });
            if name.contains(',') {
                for c in name.split(',') {
                    steps.push(CgroupMountStep::Symlink {
                        name: c.to_string(),
                        target: name.clone(),
                    });
                }
            }
        }
        steps.push(CgroupMountStep::ReadOnlyTmpfs);
        steps
    }

    fn usage(&self) -> Result<CgroupUsage> {
        let fs = self.fs.as_ref();
        let get = |c: &str, f: &str| self.file(c, f).and_then(|p| read_u64(fs, &p));
        let memory = get("memory", "memory.usage_in_bytes").unwrap_or(0);
        let swap = get("memory", "memory.memsw.usage_in_bytes").map(|t| t.saturating_sub(memory));
        let cpu = get("cpuacct", "cpuacct.usage").or_else(|| {
            let stat = fs.read(&self.dir("cpu")?.join("cpu.stat")).ok()?;
            stat_field(&stat, "usage_usec").map(|u| u * 1000)
        });
        let processes = match get("pids", "pids.current") {
            Some(n) => n,
            None => self.procs()?.len() as u64,
        };
        Ok(CgroupUsage {
            memory_bytes: memory,
            memory_peak_bytes: get("memory", "memory.max_usage_in_bytes"),
            swap_bytes: swap,
            cpu_time_ns: cpu.unwrap_or(0),
            processes,
        })
    }

    fn freeze(&self) -> Result<()> {
        let (path, v2) = self.freezer()?;
        let fs = self.fs.as_ref();
        if v2 {
            return super::v2::freeze_dir(fs, &path);
        }
        write(fs, &path, "FROZEN")?;
        wait_for("the container to freeze", || {
            Ok(read(fs, &path)? == "FROZEN")
        })
    }

    fn thaw(&self) -> Result<()> {
        let (path, v2) = self.freezer()?;
        let fs = self.fs.as_ref();
        if v2 {
            return super::v2::thaw_dir(fs, &path);
        }
        if !fs.exists(&path) {
            return Ok(());
        }
        write(fs, &path, "THAWED")
    }

    fn is_frozen(&self) -> Result<bool> {
        let (path, v2) = self.freezer()?;
        if v2 {
            return super::v2::is_frozen_dir(self.fs.as_ref(), &path);
        }
        Ok(read(self.fs.as_ref(), &path)? == "FROZEN")
    }

    fn procs(&self) -> Result<Vec<i32>> {
        procs_below(self.fs.as_ref(), &self.primary())
    }

    fn kill_all(&self) -> Result<()> {
        // Frozen tasks do not die of SIGKILL under the v1 freezer.
        let _ = self.thaw();
        let fs = self.fs.as_ref();
        if let Some(h) = self.layout.v2() {
            let kill = dir_of(h, &self.rel).join("cgroup.kill");
            if fs.exists(&kill) {
                let _ = fs.write(&kill, "1");
            }
        }
        kill_until_empty(fs, &self.primary())
    }

    fn destroy(&self) -> Result<()> {
        for h in &self.layout.hierarchies {
            remove_tree(self.fs.as_ref(), &h.mountpoint, &self.rel)?;
        }
        Ok(())
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.layout
            .hierarchies
            .iter()
            .map(|h| dir_of(h, &self.rel))
            .collect()
    }
}
