//! Unit tests of both drivers over the fake filesystem, and one root test on the host.

use std::path::Path;
use std::sync::Arc;

use super::layout::tests::{HYBRID, UNIFIED};
use super::*;
use crate::spec::{CpuAllowance, Limits};

fn hybrid() -> (Arc<FakeCgroupFs>, Box<dyn CgroupDriver>) {
    let fs = Arc::new(FakeCgroupFs::new());
    let layout = CgroupLayout::from_mountinfo(HYBRID, fs.as_ref()).unwrap();
    for h in &layout.hierarchies {
        fs.add_dir(&h.mountpoint);
    }
    fs.add_file("/sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n");
    fs.add_file("/sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    let cg = open(&layout, "hutch-x/c1", fs.clone());
    (fs, cg)
}

fn unified() -> (Arc<FakeCgroupFs>, Box<dyn CgroupDriver>) {
    let fs = Arc::new(FakeCgroupFs::new());
    fs.add_file(
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids\n",
    );
    let layout = CgroupLayout::from_mountinfo(UNIFIED, fs.as_ref()).unwrap();
    let cg = open(&layout, "hutch-x/c1", fs.clone());
    (fs, cg)
}

/// What the kernel would show in a freshly made v2 cgroup.
fn populate_v2(fs: &FakeCgroupFs, dir: &str) {
    for (f, v) in [
        ("cgroup.controllers", "cpuset cpu io memory pids"),
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("cpu.max", "max 100000"),
        ("pids.max", "max"),
        ("cpuset.cpus", ""),
        ("cgroup.procs", ""),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
    ] {
        fs.add_file(Path::new(dir).join(f), v);
    }
}

#[test]
fn v1_create_initialises_cpusets_and_devices() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    assert!(fs.has_dir("/sys/fs/cgroup/memory/hutch-x/c1"));
    assert!(fs.has_dir("/sys/fs/cgroup/systemd/hutch-x/c1"));
    assert!(fs.has_dir("/sys/fs/cgroup/unified/hutch-x/c1"));
    assert_eq!(
        fs.content("/sys/fs/cgroup/cpuset/hutch-x/cpuset.cpus")
            .as_deref(),
        Some("0-3")
    );
    assert_eq!(
        fs.content("/sys/fs/cgroup/cpuset/hutch-x/c1/cpuset.mems")
            .as_deref(),
        Some("0")
    );
    let writes = fs.writes();
    let deny = writes
        .iter()
        .position(|(p, v)| p.ends_with("c1/devices.deny") && v == "a")
        .unwrap();
    let allow = writes
        .iter()
        .position(|(p, v)| p.ends_with("c1/devices.allow") && v == "c 1:3 rwm")
        .unwrap();
    assert!(deny < allow);
    // Idempotent: nothing is written again.
    let n = fs.writes().len();
    cg.create().unwrap();
    assert_eq!(fs.writes().len(), n);
}

#[test]
fn v1_memory_limits_keep_memsw_above_memory() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file(
        "/sys/fs/cgroup/memory/hutch-x/c1/memory.memsw.limit_in_bytes",
        "9223372036854771712",
    );
    fs.add_file(
        "/sys/fs/cgroup/cpuset/hutch-x/c1/cpuset.effective_cpus",
        "0-3",
    );
    let before = fs.writes().len();
    let limits = Limits {
        memory: Some(1 << 20),
        memory_swap: false,
        ..Limits::default()
    };
    cg.apply_limits(&limits).unwrap();
    let mem: Vec<_> = fs.writes()[before..]
        .iter()
        .filter(|(p, _)| p.starts_with("/sys/fs/cgroup/memory"))
        .cloned()
        .collect();
    let names: Vec<(String, String)> = mem
        .iter()
        .map(|(p, v)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                v.clone(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("memory.memsw.limit_in_bytes".into(), "-1".into()),
            ("memory.limit_in_bytes".into(), "1048576".into()),
            ("memory.memsw.limit_in_bytes".into(), "1048576".into()),
        ]
    );
    // Clearing goes back to unlimited.
    cg.apply_limits(&Limits {
        memory_swap: true,
        ..Limits::default()
    })
    .unwrap();
    assert_eq!(
        fs.content("/sys/fs/cgroup/memory/hutch-x/c1/memory.limit_in_bytes")
            .as_deref(),
        Some("-1")
    );
    assert_eq!(
        fs.content("/sys/fs/cgroup/memory/hutch-x/c1/memory.memsw.limit_in_bytes")
            .as_deref(),
        Some("-1")
    );
    assert_eq!(
        fs.content("/sys/fs/cgroup/pids/hutch-x/c1/pids.max")
            .as_deref(),
        Some("max")
    );
}

#[test]
fn v1_cpu_limits() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file("/sys/fs/cgroup/cpuset/hutch-x/cpuset.effective_cpus", "0-3");
    let limits = Limits {
        cpu_count: Some(2),
        cpu_allowance: Some(CpuAllowance {
            quota_us: 50_000,
            period_us: 100_000,
        }),
        processes: Some(10),
        ..Limits::default()
    };
    cg.apply_limits(&limits).unwrap();
    assert_eq!(
        fs.content("/sys/fs/cgroup/cpuset/hutch-x/c1/cpuset.cpus")
            .as_deref(),
        Some("0-1")
    );
    assert_eq!(
        fs.content("/sys/fs/cgroup/cpu/hutch-x/c1/cpu.cfs_quota_us")
            .as_deref(),
        Some("50000")
    );
    assert_eq!(
        fs.content("/sys/fs/cgroup/pids/hutch-x/c1/pids.max")
            .as_deref(),
        Some("10")
    );
    let too_many = Limits {
        cpu_count: Some(8),
        ..Limits::default()
    };
    assert!(cg
        .apply_limits(&too_many)
        .unwrap_err()
        .to_string()
        .contains("8 CPUs"));
}

#[test]
fn a_failed_write_names_the_file() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.fail_nth_write(0, libc::EINVAL);
    let err = cg
        .apply_limits(&Limits {
            memory: Some(4096),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("memory.limit_in_bytes"), "{err}");
}

#[test]
fn v1_container_mounts_bind_each_hierarchy() {
    let (_fs, cg) = hybrid();
    let steps = cg.container_mounts();
    assert_eq!(steps.first(), Some(&CgroupMountStep::Tmpfs));
    assert_eq!(steps.last(), Some(&CgroupMountStep::ReadOnlyTmpfs));
    assert!(steps.contains(&CgroupMountStep::Bind {
        source: "/sys/fs/cgroup/memory/hutch-x/c1".into(),
        dir: "memory".into()
    }));
    assert!(steps.contains(&CgroupMountStep::Bind {
        source: "/sys/fs/cgroup/systemd/hutch-x/c1".into(),
        dir: "systemd".into()
    }));
    assert!(steps.contains(&CgroupMountStep::Cgroup2 {
        dir: "unified".into()
    }));
}

#[test]
fn v1_delegate_chowns_dirs_and_files() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file("/sys/fs/cgroup/systemd/hutch-x/c1/cgroup.procs", "");
    fs.add_file("/sys/fs/cgroup/systemd/hutch-x/c1/tasks", "");
    cg.delegate(1000, 1001).unwrap();
    let chowns = fs.chowns();
    assert!(chowns.contains(&("/sys/fs/cgroup/systemd/hutch-x/c1".into(), 1000, 1001)));
    assert!(chowns.contains(&("/sys/fs/cgroup/systemd/hutch-x/c1/tasks".into(), 1000, 1001)));
}

#[test]
fn v1_usage_reads_the_counters() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file(
        "/sys/fs/cgroup/memory/hutch-x/c1/memory.usage_in_bytes",
        "1000\n",
    );
    fs.add_file(
        "/sys/fs/cgroup/memory/hutch-x/c1/memory.max_usage_in_bytes",
        "2000\n",
    );
    fs.add_file(
        "/sys/fs/cgroup/memory/hutch-x/c1/memory.memsw.usage_in_bytes",
        "1500\n",
    );
    fs.add_file(
        "/sys/fs/cgroup/cpuacct/hutch-x/c1/cpuacct.usage",
        "123456\n",
    );
    fs.add_file("/sys/fs/cgroup/pids/hutch-x/c1/pids.current", "4\n");
    let u = cg.usage().unwrap();
    assert_eq!(
        u,
        CgroupUsage {
            memory_bytes: 1000,
            memory_peak_bytes: Some(2000),
            swap_bytes: Some(500),
            cpu_time_ns: 123456,
            processes: 4
        }
    );
}

#[test]
fn v1_freeze_waits_for_frozen() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file(
        "/sys/fs/cgroup/freezer/hutch-x/c1/freezer.state",
        "THAWED\n",
    );
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
}

#[test]
fn destroy_removes_children_and_empty_parents_and_is_idempotent() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_dir("/sys/fs/cgroup/systemd/hutch-x/c1/init.scope");
    fs.add_dir("/sys/fs/cgroup/memory/hutch-x/other");
    cg.destroy().unwrap();
    assert!(!fs.has_dir("/sys/fs/cgroup/systemd/hutch-x/c1"));
    assert!(!fs.has_dir("/sys/fs/cgroup/systemd/hutch-x"));
    assert!(
        fs.has_dir("/sys/fs/cgroup/memory/hutch-x/other"),
        "a sibling's cgroup must stay"
    );
    assert!(fs.has_dir("/sys/fs/cgroup/memory"));
    cg.destroy().unwrap();
}

#[test]
fn v2_create_enables_controllers_down_the_tree() {
    let (fs, cg) = unified();
    fs.add_file(
        "/sys/fs/cgroup/hutch-x/cgroup.controllers",
        "cpuset cpu io memory pids",
    );
    cg.create().unwrap();
    assert_eq!(
        fs.content("/sys/fs/cgroup/cgroup.subtree_control")
            .as_deref(),
        Some("+cpuset +cpu +io +memory +pids")
    );
    assert_eq!(
        fs.content("/sys/fs/cgroup/hutch-x/cgroup.subtree_control")
            .as_deref(),
        Some("+cpuset +cpu +io +memory +pids")
    );
    assert!(fs.has_dir("/sys/fs/cgroup/hutch-x/c1"));
    assert!(fs
        .content("/sys/fs/cgroup/hutch-x/c1/cgroup.subtree_control")
        .is_none());
    assert_eq!(
        cg.container_mounts(),
        vec![CgroupMountStep::Cgroup2 { dir: String::new() }]
    );
}

#[test]
fn v2_limits_render_and_clear() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate_v2(&fs, "/sys/fs/cgroup/hutch-x/c1");
    fs.add_file("/sys/fs/cgroup/hutch-x/cpuset.cpus.effective", "0-7");
    let limits = Limits {
        memory: Some(64 << 20),
        memory_swap: false,
        cpu_count: Some(3),
        cpu_allowance: Some(CpuAllowance {
            quota_us: 20_000,
            period_us: 100_000,
        }),
        processes: Some(99),
        ..Limits::default()
    };
    cg.apply_limits(&limits).unwrap();
    let c = |f: &str| {
        fs.content(format!("/sys/fs/cgroup/hutch-x/c1/{f}"))
            .unwrap()
    };
    assert_eq!(c("memory.max"), "67108864");
    assert_eq!(c("memory.swap.max"), "0");
    assert_eq!(c("cpuset.cpus"), "0-2");
    assert_eq!(c("cpu.max"), "20000 100000");
    assert_eq!(c("pids.max"), "99");
    cg.apply_limits(&Limits {
        memory_swap: true,
        ..Limits::default()
    })
    .unwrap();
    assert_eq!(c("memory.max"), "max");
    assert_eq!(c("memory.swap.max"), "max");
    assert_eq!(c("cpu.max"), "max 100000");
    assert_eq!(c("cpuset.cpus"), "\n");
}

#[test]
fn v2_missing_controller_is_named() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    fs.add_file("/sys/fs/cgroup/hutch-x/c1/cgroup.controllers", "cpu");
    let err = cg
        .apply_limits(&Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");
}

#[test]
fn v2_exec_falls_back_to_a_leaf_when_the_cgroup_is_busy() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate_v2(&fs, "/sys/fs/cgroup/hutch-x/c1");
    fs.fail_writes_to("/sys/fs/cgroup/hutch-x/c1/cgroup.procs", libc::EBUSY);
    cg.add_exec_process(42).unwrap();
    assert_eq!(
        fs.content(format!(
            "/sys/fs/cgroup/hutch-x/c1/{EXEC_LEAF}/cgroup.procs"
        ))
        .as_deref(),
        Some("42")
    );
    assert!(cg.add_process(43).is_err());
}

#[test]
fn v2_usage_and_freeze() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate_v2(&fs, "/sys/fs/cgroup/hutch-x/c1");
    fs.add_file("/sys/fs/cgroup/hutch-x/c1/memory.current", "4096");
    fs.add_file(
        "/sys/fs/cgroup/hutch-x/c1/cpu.stat",
        "usage_usec 7\nuser_usec 5\n",
    );
    fs.add_file("/sys/fs/cgroup/hutch-x/c1/pids.current", "2");
    let u = cg.usage().unwrap();
    assert_eq!(
        (
            u.memory_bytes,
            u.cpu_time_ns,
            u.processes,
            u.memory_peak_bytes
        ),
        (4096, 7000, 2, None)
    );
    // The fake does not flip cgroup.events by itself; pretend the kernel did.
    fs.add_file(
        "/sys/fs/cgroup/hutch-x/c1/cgroup.events",
        "populated 1\nfrozen 1\n",
    );
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
}

/// Runs on the real host, as root: the driver against the kernel's own cgroupfs.
#[test]
fn real_host_cgroup_lifecycle() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1"),
            "real_host_cgroup_lifecycle needs root"
        );
        eprintln!("skipping real_host_cgroup_lifecycle: needs root");
        return;
    }
    struct Cleanup(Box<dyn CgroupDriver>, Option<std::process::Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(mut c) = self.1.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = self.0.thaw();
            let _ = self.0.kill_all();
            let _ = self.0.destroy();
        }
    }
    let layout = CgroupLayout::detect().unwrap();
    let rel = format!("hutch-unit-{}/c1", std::process::id());
    let mut g = Cleanup(open(&layout, &rel, Arc::new(RealCgroupFs)), None);
    let cg = &g.0;
    cg.create().unwrap();
    cg.apply_limits(&Limits {
        memory: Some(64 << 20),
        processes: Some(50),
        memory_swap: true,
        ..Limits::default()
    })
    .unwrap();
    let mem = if layout.is_unified() {
        cg.paths()[0].join("memory.max")
    } else {
        layout
            .v1("memory")
            .unwrap()
            .mountpoint
            .join(&rel)
            .join("memory.limit_in_bytes")
    };
    assert_eq!(
        std::fs::read_to_string(mem).unwrap().trim(),
        (64u64 << 20).to_string()
    );
    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    cg.add_process(child.id() as i32).unwrap();
    g.1 = Some(child);
    let cg = &g.0;
    assert!(cg.usage().unwrap().processes >= 1);
    assert_eq!(cg.procs().unwrap(), vec![g.1.as_ref().unwrap().id() as i32]);
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    cg.kill_all().unwrap();
    let _ = g.1.take().unwrap().wait();
    let cg = &g.0;
    cg.destroy().unwrap();
    for p in cg.paths() {
        assert!(!p.exists(), "{} left behind", p.display());
        assert!(
            !p.parent().unwrap().exists(),
            "{} left behind",
            p.parent().unwrap().display()
        );
    }
}
