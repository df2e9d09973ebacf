//! cgroup v1, including hybrid hosts where an (often controller-less) v2 tree sits at
//! /sys/fs/cgroup/unified: per-controller hierarchies, each with the container's directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::dir_of;
use super::tree::{
    add_to_dir_or_leaf, delegate_dir, freeze_file, kill_until_empty, make_levels, procs_below,
    remove_tree,
};
use super::values::{
    cpuset_for, devices_match, max_or, stat_field, v1_cpu_writes, v1_memory_writes, DEVICE_ALLOW,
};
use super::{
    read, read_u64, write, CgroupDriver, CgroupFs, CgroupLayout, CgroupMountStep, CgroupUsage,
    SETTLE_TIMEOUT,
};
use crate::error::{Result, RuntimeError};
use crate::spec::Limits;

/// The v1 driver: one directory per hierarchy (the hybrid v2 one included).
#[derive(Debug)]
pub struct V1Cgroup {
    layout: CgroupLayout,
    rel: String,
    fs: Arc<dyn CgroupFs>,
}

/// Where freezing happens: v1's freezer, or cgroup.freeze of the hybrid v2 tree.
enum Freezer {
    V1(PathBuf),
    V2(PathBuf),
}

fn missing(controller: &str) -> RuntimeError {
    RuntimeError::CgroupControllerMissing {
        controller: controller.into(),
    }
}

impl V1Cgroup {
    /// The container's directories on the v1 hierarchies only.
    fn v1_paths(&self) -> Vec<PathBuf> {
        self.layout
            .hierarchies
            .iter()
            .filter(|h| !h.v2)
            .map(|h| dir_of(h, &self.rel))
            .collect()
    }

    fn add_to(&self, dirs: Vec<PathBuf>, pid: i32) -> Result<()> {
        for dir in dirs {
            write(
                self.fs.as_ref(),
                &dir.join("cgroup.procs"),
                &pid.to_string(),
            )?;
        }
        Ok(())
    }

    fn add_exec_to(&self, dirs: Vec<PathBuf>, pid: i32) -> Result<()> {
        for dir in dirs {
            add_to_dir_or_leaf(self.fs.as_ref(), &dir, pid)?;
        }
        Ok(())
    }

    /// The driver for `rel` under each hierarchy of `layout`.
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

    /// Writes `(file, value)` pairs in `dir`, in order.
    fn write_all(&self, dir: &Path, writes: &[(&str, String)]) -> Result<()> {
        for (file, value) in writes {
            write(self.fs.as_ref(), &dir.join(file), value)?;
        }
        Ok(())
    }

    /// A new cpuset has no cpus or mems and refuses tasks until given some; so does one a
    /// crash left half made. Cloning makes cpusets nested managers create inherit too.
    fn init_cpuset(&self, parent: &Path, dir: &Path, made: bool) -> Result<()> {
        let fs = self.fs.as_ref();
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let empty = fs.read(&dir.join(f)).is_ok_and(|v| v.trim().is_empty());
            if made || empty {
                let v = read(fs, &parent.join(f))?;
                write(fs, &dir.join(f), &v)?;
            }
        }
        let clone = dir.join("cgroup.clone_children");
        if made && fs.exists(&clone) {
            write(fs, &clone, "1")?;
        }
        Ok(())
    }

    /// `deny a` then the allowlist, unless devices.list already shows exactly that.
    fn init_devices(&self, dir: &Path, made: bool) -> Result<()> {
        let fs = self.fs.as_ref();
        let differs = fs
            .read(&dir.join("devices.list"))
            .is_ok_and(|l| !devices_match(&l));
        if made || differs {
            write(fs, &dir.join("devices.deny"), "a")?;
            for rule in DEVICE_ALLOW {
                write(fs, &dir.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    /// The container's directory of the devices hierarchy.
    fn devices_dir(&self) -> Option<PathBuf> {
        self.dir("devices")
    }

    fn apply_memory(&self, limits: &Limits) -> Result<()> {
        match self.dir("memory") {
            Some(dir) => {
                let has_memsw = self.fs.exists(&dir.join("memory.memsw.limit_in_bytes"));
                self.write_all(&dir, &v1_memory_writes(limits, has_memsw))
            }
            None if limits.memory.is_some() => Err(missing("memory")),
            None => Ok(()),
        }
    }

    fn apply_cpuset(&self, limits: &Limits) -> Result<()> {
        let wanted = limits.cpu_set.is_some() || limits.cpu_count.is_some();
        let Some(dir) = self.dir("cpuset") else {
            return if wanted {
                Err(missing("cpuset"))
            } else {
                Ok(())
            };
        };
        let fs = self.fs.as_ref();
        let parent = dir.parent().unwrap_or(&dir);
        let parent_cpus = read(fs, &parent.join("cpuset.effective_cpus"))
            .or_else(|_| read(fs, &parent.join("cpuset.cpus")))?;
        let value =
            cpuset_for(limits, &parent_cpus).map_err(|reason| RuntimeError::CgroupValue {
                path: dir.clone(),
                key: "cpuset.cpus".into(),
                value: reason,
            })?;
        // No pinning: all the parent has (v1 has no "inherit" value).
        let value = value.unwrap_or(parent_cpus);
        write(fs, &dir.join("cpuset.cpus"), &value)
    }

    fn apply_cpu(&self, limits: &Limits) -> Result<()> {
        match self.dir("cpu") {
            Some(dir) => self.write_all(&dir, &v1_cpu_writes(limits)),
            None if limits.cpu_allowance.is_some() => Err(missing("cpu")),
            None => Ok(()),
        }
    }

    fn apply_pids(&self, limits: &Limits) -> Result<()> {
        match self.dir("pids") {
            Some(dir) => write(
                self.fs.as_ref(),
                &dir.join("pids.max"),
                &max_or(limits.processes),
            ),
            None if limits.processes.is_some() => Err(missing("pids")),
            None => Ok(()),
        }
    }

    fn freezer(&self) -> Result<Freezer> {
        if let Some(f) = self.file("freezer", "freezer.state") {
            return Ok(Freezer::V1(f));
        }
        match self.layout.v2() {
            Some(h) => Ok(Freezer::V2(dir_of(h, &self.rel))),
            None => Err(missing("freezer")),
        }
    }

    /// The hierarchy used to list processes: any will do, all hold every process.
    fn primary(&self) -> Option<PathBuf> {
        ["pids", "memory", "freezer"]
            .iter()
            .find_map(|c| self.dir(c))
            .or_else(|| {
                self.layout
                    .hierarchies
                    .first()
                    .map(|h| dir_of(h, &self.rel))
            })
    }
}

impl CgroupDriver for V1Cgroup {
    fn create(&self) -> Result<()> {
        for h in &self.layout.hierarchies {
            let (cpuset, devices) = (h.has("cpuset"), h.has("devices"));
            let leaf = dir_of(h, &self.rel);
            make_levels(
                self.fs.as_ref(),
                &h.mountpoint,
                &self.rel,
                |parent, dir, made| {
                    if cpuset {
                        self.init_cpuset(parent, dir, made)?;
                    }
                    if devices && dir == leaf {
                        self.init_devices(dir, made)?;
                    }
                    Ok(())
                },
            )?;
        }
        Ok(())
    }

    fn apply_limits(&self, limits: &Limits) -> Result<()> {
        self.apply_memory(limits)?;
        self.apply_cpuset(limits)?;
        self.apply_cpu(limits)?;
        self.apply_pids(limits)
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        self.add_to(self.paths(), pid)
    }

    fn add_exec_process(&self, pid: i32) -> Result<()> {
        self.add_exec_to(self.paths(), pid)
    }

    fn v2_dir(&self) -> Option<PathBuf> {
        self.layout
            .hierarchies
            .iter()
            .find(|h| h.v2)
            .map(|h| dir_of(h, &self.rel))
    }

    fn update_device_rules(&self, old: &[String], new: &[String]) -> Result<()> {
        let Some(dir) = self.devices_dir() else {
            return Ok(());
        };
        let fs = self.fs.as_ref();
        let gone: Vec<&String> = old.iter().filter(|r| !new.contains(r)).collect();
        for rule in &gone {
            write(fs, &dir.join("devices.deny"), rule)?;
        }
        // A denied rule may have overlapped one still allowed (the standard ones included):
        // those are allowed again.
        let again = match gone.is_empty() {
            true => Vec::new(),
            false => DEVICE_ALLOW.iter().map(|r| r.to_string()).collect(),
        };
        for rule in again.iter().chain(new.iter()) {
            if gone.is_empty() && old.contains(rule) {
                continue;
            }
            write(fs, &dir.join("devices.allow"), rule)?;
        }
        Ok(())
    }

    fn add_process_v1(&self, pid: i32) -> Result<()> {
        self.add_to(self.v1_paths(), pid)
    }

    fn add_exec_process_v1(&self, pid: i32) -> Result<()> {
        self.add_exec_to(self.v1_paths(), pid)
    }

    fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        for dir in self.paths() {
            delegate_dir(self.fs.as_ref(), &dir, uid, gid)?;
        }
        Ok(())
    }

    fn container_mounts(&self) -> Vec<CgroupMountStep> {
        let mut steps = vec![CgroupMountStep::Tmpfs];
        for h in &self.layout.hierarchies {
            let Some(name) = h.mountpoint.file_name() else {
                continue;
            };
            let name = name.to_string_lossy().into_owned();
            if h.v2 {
                steps.push(CgroupMountStep::Cgroup2 { dir: name });
                continue;
            }
            steps.push(CgroupMountStep::Bind {
                source: dir_of(h, &self.rel),
                dir: name.clone(),
            });
            // Co-mounted controllers: each name leads to the one directory, as on the host.
            let links: Vec<CgroupMountStep> = h
                .controllers
                .iter()
                .filter(|c| !c.starts_with("name=") && **c != name)
                .map(|c| CgroupMountStep::Symlink {
                    name: c.clone(),
                    target: name.clone(),
                })
                .collect();
            steps.extend(links);
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
            // No cpuacct: the hybrid v2 tree may still count CPU time (cpu.stat is core).
            let stat = fs
                .read(&dir_of(self.layout.v2()?, &self.rel).join("cpu.stat"))
                .ok()?;
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
        let fs = self.fs.as_ref();
        match self.freezer()? {
            // Reading freezer.state also moves FREEZING on to FROZEN once every task stopped.
            Freezer::V1(state) => {
                freeze_file(fs, &state, ("FROZEN", "THAWED"), SETTLE_TIMEOUT, || {
                    Ok(read(fs, &state)? == "FROZEN")
                })
            }
            Freezer::V2(dir) => super::v2::freeze_dir(fs, &dir),
        }
    }

    fn thaw(&self) -> Result<()> {
        let fs = self.fs.as_ref();
        match self.freezer()? {
            Freezer::V1(state) if fs.exists(&state) => write(fs, &state, "THAWED"),
            Freezer::V1(_) => Ok(()),
            Freezer::V2(dir) => super::v2::thaw_dir(fs, &dir),
        }
    }

    fn is_frozen(&self) -> Result<bool> {
        let fs = self.fs.as_ref();
        match self.freezer()? {
            Freezer::V1(state) => Ok(read(fs, &state)? == "FROZEN"),
            Freezer::V2(dir) => super::v2::is_frozen_dir(fs, &dir),
        }
    }

    fn procs(&self) -> Result<Vec<i32>> {
        match self.primary() {
            Some(dir) => procs_below(self.fs.as_ref(), &dir),
            None => Ok(Vec::new()),
        }
    }

    fn kill_all(&self) -> Result<()> {
        // Tasks stopped by the v1 freezer do not die of SIGKILL until thawed.
        let _ = self.thaw();
        let fs = self.fs.as_ref();
        if let Some(h) = self.layout.v2() {
            // The hybrid v2 tree may have cgroup.kill (5.14+): one write kills everything.
            let kill = dir_of(h, &self.rel).join("cgroup.kill");
            if fs.exists(&kill) {
                let _ = fs.write(&kill, "1");
            }
        }
        match self.primary() {
            Some(dir) => kill_until_empty(fs, &dir, SETTLE_TIMEOUT),
            None => Ok(()),
        }
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
