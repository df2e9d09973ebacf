//! Which cgroup hierarchies the host has mounted, read from /proc/self/mountinfo.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fs::CgroupFs;
use crate::error::{Result, RuntimeError};

/// Where the host mounts its cgroup hierarchies.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// v1 controllers the kernel knows; other super options of a cgroup mount are flags.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    pub mountpoint: PathBuf,
    /// v1: the controllers bound to it (`name=systemd` for named ones); v2: those in
    /// cgroup.controllers, possibly none.
    pub controllers: Vec<String>,
    pub v2: bool,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The host's cgroup layout: pure v2, or v1 (hybrid when a v2 hierarchy sits beside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLayout {
    pub hierarchies: Vec<Hierarchy>,
}

impl CgroupLayout {
    /// Reads the layout of this host.
    pub fn detect() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| RuntimeError::io("read", "/proc/self/mountinfo", e))?;
        Self::from_mountinfo(&text, &super::RealCgroupFs)
    }

    /// Parses mountinfo text; v2 controller lists are read through `fs`.
    pub fn from_mountinfo(mountinfo: &str, fs: &dyn CgroupFs) -> Result<Self> {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 || left[3] != "/" {
                continue;
            }
            let mountpoint = PathBuf::from(unescape(left[4]));
            if !mountpoint.starts_with(CGROUP_ROOT)
                || hierarchies.iter().any(|h| h.mountpoint == mountpoint)
            {
                continue;
            }
            let h = match right[0] {
                "cgroup" => {
                    let controllers: Vec<String> = right[2]
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    // The same hierarchy can be mounted twice; keep the first.
                    if controllers.is_empty()
                        || hierarchies
                            .iter()
                            .any(|h| !h.v2 && h.controllers == controllers)
                    {
                        continue;
                    }
                    Hierarchy {
                        mountpoint,
                        controllers,
                        v2: false,
                    }
                }
                "cgroup2" => {
                    let controllers = fs
                        .read(&mountpoint.join("cgroup.controllers"))
                        .map(|s| s.split_whitespace().map(str::to_string).collect())
                        .unwrap_or_default();
                    Hierarchy {
                        mountpoint,
                        controllers,
                        v2: true,
                    }
                }
                _ => continue,
            };
            hierarchies.push(h);
        }
        if hierarchies.is_empty() {
            return Err(RuntimeError::CgroupNotMounted {
                root: CGROUP_ROOT.into(),
            });
        }
        Ok(CgroupLayout { hierarchies })
    }

    /// A pure cgroup v2 host.
    pub fn is_unified(&self) -> bool {
        self.hierarchies.iter().all(|h| h.v2)
    }

    /// The hierarchy holding a v1 controller.
    pub fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| !h.v2 && h.has(controller))
    }

    /// The v2 hierarchy, if any (the whole tree on a unified host, `unified` on a hybrid one).
    pub fn v2(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.v2)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let n = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path of `rel` under a hierarchy.
pub fn dir_of(h: &Hierarchy, rel: &str) -> PathBuf {
    h.mountpoint.join(Path::new(rel))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cgroup::FakeCgroupFs;

    /// This machine's layout: v1 controllers, name=systemd and an empty unified v2.
    pub const HYBRID: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
36 30 0:32 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
37 30 0:33 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
38 30 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:35 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 24 0:36 /x /mnt/elsewhere rw,relatime - cgroup2 cgroup2 rw
";

    pub const UNIFIED: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_layout_is_parsed() {
        let fs = FakeCgroupFs::new();
        let layout = CgroupLayout::from_mountinfo(HYBRID, &fs).unwrap();
        assert_eq!(layout.hierarchies.len(), 10);
        assert!(!layout.is_unified());
        assert_eq!(
            layout.v1("memory").unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/memory")
        );
        assert!(layout.v1("name=systemd").is_some());
        let v2 = layout.v2().unwrap();
        assert_eq!(v2.mountpoint, Path::new("/sys/fs/cgroup/unified"));
        assert!(v2.controllers.is_empty());
    }

    #[test]
    fn unified_layout_reads_controllers() {
        let fs = FakeCgroupFs::new();
        fs.add_file(
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        let layout = CgroupLayout::from_mountinfo(UNIFIED, &fs).unwrap();
        assert!(layout.is_unified());
        assert_eq!(
            layout.v2().unwrap().controllers,
            vec!["cpuset", "cpu", "io", "memory", "pids"]
        );
    }

    #[test]
    fn comounted_controllers_stay_together_and_escapes_are_undone() {
        let text = "1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    2 0 0:2 / /sys/fs/cgroup/we\\040ird rw - cgroup cgroup rw,pids\n";
        let layout = CgroupLayout::from_mountinfo(text, &FakeCgroupFs::new()).unwrap();
        assert_eq!(layout.hierarchies[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            layout.hierarchies[1].mountpoint,
            Path::new("/sys/fs/cgroup/we ird")
        );
    }

    #[test]
    fn no_cgroups_is_an_error() {
        assert!(CgroupLayout::from_mountinfo(
            "1 0 0:1 / / rw - ext4 /dev/vda rw\n",
            &FakeCgroupFs::new()
        )
        .is_err());
    }
}
