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
    "debug",
];

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// Where the host mounts it (`/sys/fs/cgroup/memory`, or `/sys/fs/cgroup` on v2).
    pub mountpoint: PathBuf,
    /// v1: the controllers bound to it (`name=systemd` for named ones); v2: those in
    /// cgroup.controllers, possibly none.
    pub controllers: Vec<String>,
    /// A cgroup2 mount (the whole tree on a unified host, `unified` on a hybrid one).
    pub v2: bool,
}

impl Hierarchy {
    /// Whether `controller` (or `name=...`) belongs to this hierarchy.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The host's cgroup layout: pure v2, or v1 (hybrid when a v2 hierarchy sits beside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLayout {
    /// In mountinfo order, one per mounted hierarchy.
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
            // A root other than "/" (a host cgroup bound into a container without a cgroup
            // namespace) still shows that subtree at the mountpoint; paths are relative to it.
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let mountpoint = PathBuf::from(unescape(left[4]));
            if !mountpoint.starts_with(CGROUP_ROOT) {
                continue;
            }
            // A later mount on the same path hides the earlier one.
            hierarchies.retain(|h| h.mountpoint != mountpoint);
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
        self.unified_hierarchy().is_some()
    }

    /// The v2 hierarchy of a pure v2 host: one with no v1 hierarchy carrying a controller
    /// beside it (a lone named v1 hierarchy, as some tools mount for old guests, does not
    /// count). `None` on v1 and hybrid hosts.
    pub fn unified_hierarchy(&self) -> Option<&Hierarchy> {
        let v1_controllers = self
            .hierarchies
            .iter()
            .any(|h| !h.v2 && h.controllers.iter().any(|c| !c.starts_with("name=")));
        let mut v2 = self.hierarchies.iter().filter(|h| h.v2);
        match (v2.next(), v2.next(), v1_controllers) {
            (Some(h), None, false) => Some(h),
            _ => None,
        }
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

    /// A Debian 12 VM on kernel 6.18 booted hybrid: every v1 controller on its own (cpu and
    /// cpuacct not co-mounted), name=systemd, and a cgroup2 at `unified`.
    pub const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334524k,nr_inodes=3083631,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684096k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd distribution on cgroup v2 only (Debian 12, Ubuntu 22.04 and later).
    pub const UNIFIED: &str = "\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
28 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
27 22 0:24 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
30 22 0:7 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime shared:15 - debugfs debugfs rw
";

    #[test]
    fn hybrid_layout_is_parsed() {
        let fs = FakeCgroupFs::new();
        fs.add_file("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
        let layout = CgroupLayout::from_mountinfo(HYBRID, &fs).unwrap();
        assert_eq!(layout.hierarchies.len(), 10);
        assert!(!layout.is_unified());
        assert_eq!(layout.v1("cpu").unwrap().controllers, vec!["cpu"]);
        assert_eq!(
            layout.v1("memory").unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/memory")
        );
        assert!(layout.v1("name=systemd").is_some());
        let v2 = layout.v2().unwrap();
        assert_eq!(v2.mountpoint, Path::new("/sys/fs/cgroup/unified"));
        // Controllers no v1 hierarchy took show up on the v2 side.
        assert_eq!(v2.controllers, vec!["hugetlb"]);
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

    #[test]
    fn layouts_survive_serde() {
        let layout = CgroupLayout::from_mountinfo(HYBRID, &FakeCgroupFs::new()).unwrap();
        let json = serde_json::to_string(&layout).unwrap();
        assert_eq!(serde_json::from_str::<CgroupLayout>(&json).unwrap(), layout);
    }

    #[test]
    fn unified_means_one_v2_tree_and_no_v1_controllers() {
        let empty = CgroupLayout {
            hierarchies: Vec::new(),
        };
        assert!(!empty.is_unified());
        // A named v1 hierarchy beside a v2 root does not make the host hybrid.
        let text = format!(
            "{UNIFIED}90 26 0:50 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,none,name=systemd\n"
        );
        let layout = CgroupLayout::from_mountinfo(&text, &FakeCgroupFs::new()).unwrap();
        assert_eq!(layout.hierarchies.len(), 2);
        assert_eq!(
            layout.unified_hierarchy().unwrap().mountpoint,
            Path::new(CGROUP_ROOT)
        );
    }

    #[test]
    fn bound_subtrees_and_later_mounts_count() {
        // Inside a container without a cgroup namespace: the root is the container's cgroup.
        let text = "1 0 0:1 /lxc/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    2 0 0:2 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
                    3 0 0:3 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids,clone_children\n";
        let layout = CgroupLayout::from_mountinfo(text, &FakeCgroupFs::new()).unwrap();
        assert_eq!(layout.hierarchies.len(), 2);
        assert!(layout.v1("memory").is_some());
        assert_eq!(layout.v1("pids").unwrap().controllers, vec!["pids"]);
    }
}
