//! The v1 driver on the hybrid layout of this project's test VM, over the fake filesystem.

use std::path::Path;
use std::sync::Arc;

use super::super::layout::tests::HYBRID;
use super::super::values::DEVICE_ALLOW;
use super::super::*;
use super::{file_writes, pairs, C1};
use crate::spec::{CpuAllowance, Limits};

const MEM: &str = "/sys/fs/cgroup/memory/hutch-x/c1";

/// The hybrid host, with the root files the driver reads.
fn hybrid() -> (Arc<FakeCgroupFs>, Box<dyn CgroupDriver>) {
    let fs = Arc::new(FakeCgroupFs::new());
    let layout = CgroupLayout::from_mountinfo(HYBRID, fs.as_ref()).unwrap();
    for h in &layout.hierarchies {
        fs.add_dir(&h.mountpoint);
    }
    fs.add_file("/sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n");
    fs.add_file("/sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    let cg = open(&layout, C1, fs.clone());
    (fs, cg)
}

#[test]
fn create_initialises_cpusets_and_devices() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    for h in ["memory", "systemd", "unified", "cpu", "cpuacct"] {
        assert!(fs.has_dir(format!("/sys/fs/cgroup/{h}/{C1}")), "{h}");
    }
    for level in ["hutch-x", C1] {
        let d = format!("/sys/fs/cgroup/cpuset/{level}");
        assert_eq!(
            fs.content(format!("{d}/cpuset.cpus")).as_deref(),
            Some("0-3")
        );
        assert_eq!(fs.content(format!("{d}/cpuset.mems")).as_deref(), Some("0"));
    }
    // deny everything, then exactly the allowlist, in order; only on the container's level.
    let devices: Vec<String> = fs
        .writes()
        .into_iter()
        .filter(|(p, _)| p.starts_with("/sys/fs/cgroup/devices"))
        .map(|(p, v)| format!("{} {v}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    let mut expected = vec!["devices.deny a".to_string()];
    expected.extend(DEVICE_ALLOW.iter().map(|r| format!("devices.allow {r}")));
    assert_eq!(devices, expected);
    assert!(DEVICE_ALLOW.contains(&"c 10:229 rwm") && DEVICE_ALLOW.contains(&"c 136:* rwm"));
    // Idempotent: nothing is written again.
    let n = fs.writes().len();
    cg.create().unwrap();
    assert_eq!(fs.writes().len(), n);
}

#[test]
fn device_rules_are_allowed_and_denied_live() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    let devices = |from: usize| -> Vec<String> {
        fs.writes()[from..]
            .iter()
            .filter(|(p, _)| p.starts_with("/sys/fs/cgroup/devices"))
            .map(|(p, v)| format!("{} {v}", p.file_name().unwrap().to_string_lossy()))
            .collect()
    };
    let rules = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let n = fs.writes().len();
    let one = rules(&["c 1:200 rwm"]);
    set_device_rules(cg.as_ref(), &[], &one).unwrap();
    assert_eq!(devices(n), ["devices.allow c 1:200 rwm"]);
    // Adding one more writes only it.
    let n = fs.writes().len();
    let two = rules(&["c 1:200 rwm", "b 7:0 rwm"]);
    set_device_rules(cg.as_ref(), &one, &two).unwrap();
    assert_eq!(devices(n), ["devices.allow b 7:0 rwm"]);
    // A denial may overlap a standard rule (1:3 is /dev/null): those are allowed again.
    let n = fs.writes().len();
    let null = rules(&["c 1:3 rwm"]);
    set_device_rules(cg.as_ref(), &two, &null).unwrap();
    let mut expected = vec![
        "devices.deny c 1:200 rwm".to_string(),
        "devices.deny b 7:0 rwm".to_string(),
    ];
    expected.extend(DEVICE_ALLOW.iter().map(|r| format!("devices.allow {r}")));
    expected.push("devices.allow c 1:3 rwm".into());
    assert_eq!(devices(n), expected);
    let n = fs.writes().len();
    set_device_rules(cg.as_ref(), &null, &null).unwrap();
    assert!(devices(n).is_empty());
}

#[test]
fn create_repairs_what_a_crash_left_half_made() {
    let (fs, cg) = hybrid();
    // mkdir happened, the cpuset and devices setup did not.
    fs.add_file("/sys/fs/cgroup/cpuset/hutch-x/cpuset.cpus", "\n");
    fs.add_file("/sys/fs/cgroup/cpuset/hutch-x/cpuset.mems", "\n");
    fs.add_file(format!("/sys/fs/cgroup/cpuset/{C1}/cpuset.cpus"), "\n");
    fs.add_file(format!("/sys/fs/cgroup/cpuset/{C1}/cpuset.mems"), "0\n");
    fs.add_file(
        format!("/sys/fs/cgroup/devices/{C1}/devices.list"),
        "a *:* rwm\n",
    );
    cg.create().unwrap();
    assert_eq!(
        fs.content(format!("/sys/fs/cgroup/cpuset/{C1}/cpuset.cpus"))
            .as_deref(),
        Some("0-3")
    );
    assert_eq!(
        fs.content(format!("/sys/fs/cgroup/cpuset/{C1}/cpuset.mems"))
            .as_deref(),
        Some("0\n"),
        "a cpuset that has mems keeps them"
    );
    assert!(fs
        .writes()
        .iter()
        .any(|(p, v)| p.ends_with("c1/devices.deny") && v == "a"));
}

#[test]
fn memory_limits_keep_memsw_above_memory_both_ways() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file(
        format!("{MEM}/memory.memsw.limit_in_bytes"),
        "9223372036854771712",
    );
    let limit = |bytes: u64| Limits {
        memory: Some(bytes),
        memory_swap: false,
        ..Limits::default()
    };
    let memsw = "memory.memsw.limit_in_bytes";
    let mem = "memory.limit_in_bytes";
    // Set, lower, raise: the same safe order each time.
    for bytes in [1u64 << 30, 1 << 20, 1 << 31] {
        let before = fs.writes().len();
        cg.apply_limits(&limit(bytes)).unwrap();
        let v = bytes.to_string();
        assert_eq!(
            file_writes(&fs, before, "/sys/fs/cgroup/memory"),
            pairs(&[(memsw, "-1"), (mem, &v), (memsw, &v)])
        );
    }
    // Clearing goes back to unlimited, memsw first.
    let before = fs.writes().len();
    cg.apply_limits(&Limits {
        memory_swap: true,
        ..Limits::default()
    })
    .unwrap();
    assert_eq!(
        file_writes(&fs, before, "/sys/fs/cgroup/memory"),
        pairs(&[(memsw, "-1"), (mem, "-1")])
    );
    let pids = format!("/sys/fs/cgroup/pids/{C1}/pids.max");
    assert_eq!(fs.content(pids).as_deref(), Some("max"));
}

#[test]
fn cpu_limits_and_clearing() {
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
    let c = |f: &str| fs.content(format!("/sys/fs/cgroup/{f}")).unwrap();
    assert_eq!(c("cpuset/hutch-x/c1/cpuset.cpus"), "0-1");
    assert_eq!(c("cpu/hutch-x/c1/cpu.cfs_period_us"), "100000");
    assert_eq!(c("cpu/hutch-x/c1/cpu.cfs_quota_us"), "50000");
    assert_eq!(c("pids/hutch-x/c1/pids.max"), "10");
    cg.apply_limits(&Limits::default()).unwrap();
    assert_eq!(c("cpuset/hutch-x/c1/cpuset.cpus"), "0-3");
    assert_eq!(c("cpu/hutch-x/c1/cpu.cfs_quota_us"), "-1");
    let too_many = Limits {
        cpu_count: Some(8),
        ..Limits::default()
    };
    let err = cg.apply_limits(&too_many).unwrap_err();
    assert!(err.to_string().contains("cpuset.cpus"), "{err}");
}

#[test]
fn a_limit_without_its_controller_names_it() {
    let fs = Arc::new(FakeCgroupFs::new());
    let text = "1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    let layout = CgroupLayout::from_mountinfo(text, fs.as_ref()).unwrap();
    let cg = open(&layout, C1, fs.clone());
    fs.add_dir(format!("/sys/fs/cgroup/memory/{C1}"));
    let err = cg
        .apply_limits(&Limits {
            processes: Some(5),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::CgroupControllerMissing { controller } if controller == "pids")
    );
    // Without limits that need them, missing controllers are fine.
    cg.apply_limits(&Limits::default()).unwrap();
}

#[test]
fn a_failed_write_names_the_file() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file(format!("{MEM}/memory.memsw.limit_in_bytes"), "-1");
    // The second write of apply_limits: the memory limit, after memsw was lifted.
    fs.fail_nth_write(1, libc::EBUSY);
    let err = cg
        .apply_limits(&Limits {
            memory: Some(4096),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{MEM}/memory.limit_in_bytes")),
        "{err}"
    );
}

#[test]
fn container_mounts_bind_each_hierarchy() {
    let (_fs, cg) = hybrid();
    let steps = cg.container_mounts();
    let bind = |dir: &str| CgroupMountStep::Bind {
        source: Path::new("/sys/fs/cgroup").join(dir).join(C1),
        dir: dir.into(),
    };
    let mut expected = vec![CgroupMountStep::Tmpfs];
    for d in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        expected.push(bind(d));
    }
    expected.push(bind("systemd"));
    expected.push(CgroupMountStep::Cgroup2 {
        dir: "unified".into(),
    });
    expected.push(CgroupMountStep::ReadOnlyTmpfs);
    assert_eq!(steps, expected);
}

#[test]
fn comounted_controllers_get_symlinks() {
    let fs = Arc::new(FakeCgroupFs::new());
    let text = "1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                2 0 0:2 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls,net_prio\n";
    let layout = CgroupLayout::from_mountinfo(text, fs.as_ref()).unwrap();
    let steps = open(&layout, C1, fs).container_mounts();
    let link = |name: &str, target: &str| CgroupMountStep::Symlink {
        name: name.into(),
        target: target.into(),
    };
    assert_eq!(steps[2], link("cpu", "cpu,cpuacct"));
    assert_eq!(steps[3], link("cpuacct", "cpu,cpuacct"));
    assert_eq!(steps[5], link("net_prio", "net_cls"));
    assert_eq!(steps.len(), 7);
}

#[test]
fn delegate_chowns_dirs_and_files() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    let systemd = format!("/sys/fs/cgroup/systemd/{C1}");
    for f in [
        "cgroup.procs",
        "tasks",
        "cgroup.clone_children",
        "notify_on_release",
    ] {
        fs.add_file(format!("{systemd}/{f}"), "");
    }
    fs.add_file(format!("{systemd}/release_agent"), "");
    cg.delegate(1000, 1001).unwrap();
    let chowned: Vec<_> = fs
        .chowns()
        .into_iter()
        .filter(|(p, ..)| p.starts_with(&systemd))
        .map(|(p, u, g)| {
            assert_eq!((u, g), (1000, 1001));
            p.strip_prefix(&systemd)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        chowned,
        [
            "",
            "cgroup.procs",
            "tasks",
            "cgroup.clone_children",
            "notify_on_release"
        ]
    );
    // Every hierarchy's directory is handed over.
    assert_eq!(
        fs.chowns().iter().filter(|(p, ..)| p.ends_with(C1)).count(),
        10
    );
}

#[test]
fn usage_reads_the_counters() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_file(format!("{MEM}/memory.usage_in_bytes"), "1000\n");
    fs.add_file(format!("{MEM}/memory.max_usage_in_bytes"), "2000\n");
    fs.add_file(format!("{MEM}/memory.memsw.usage_in_bytes"), "1500\n");
    fs.add_file(
        format!("/sys/fs/cgroup/cpuacct/{C1}/cpuacct.usage"),
        "123456\n",
    );
    fs.add_file(format!("/sys/fs/cgroup/pids/{C1}/pids.current"), "4\n");
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
fn usage_falls_back_where_counters_are_missing() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    // No pids.current: count cgroup.procs below the container, sub-cgroups included.
    fs.add_file(format!("/sys/fs/cgroup/pids/{C1}/cgroup.procs"), "1\n2\n");
    fs.add_file(
        format!("/sys/fs/cgroup/pids/{C1}/init.scope/cgroup.procs"),
        "3\n",
    );
    // No cpuacct.usage: the hybrid v2 tree's cpu.stat.
    fs.add_file(
        format!("/sys/fs/cgroup/unified/{C1}/cpu.stat"),
        "usage_usec 5\n",
    );
    let u = cg.usage().unwrap();
    assert_eq!(u.processes, 3);
    assert_eq!(u.cpu_time_ns, 5000);
    assert_eq!(
        (u.memory_bytes, u.memory_peak_bytes, u.swap_bytes),
        (0, None, None)
    );
    assert_eq!(cg.procs().unwrap(), vec![1, 2, 3]);
}

#[test]
fn freeze_polls_until_frozen_and_thaws() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    let state = format!("/sys/fs/cgroup/freezer/{C1}/freezer.state");
    fs.add_file(&state, "THAWED\n");
    // The kernel reports FREEZING until the last task stopped.
    fs.queue_reads(&state, &["FREEZING\n", "FREEZING\n"]);
    cg.freeze().unwrap();
    assert_eq!(fs.pending_reads(&state), 0);
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    assert_eq!(fs.content(&state).as_deref(), Some("THAWED"));
}

#[test]
fn add_process_joins_every_hierarchy() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    let before = fs.writes().len();
    cg.add_process(42).unwrap();
    let procs: Vec<_> = fs.writes()[before..].to_vec();
    assert_eq!(procs.len(), 10);
    assert!(procs
        .iter()
        .all(|(p, v)| p.ends_with("c1/cgroup.procs") && v == "42"));
    assert_eq!(cg.paths().len(), 10);
}

#[test]
fn destroy_removes_children_and_empty_parents_and_is_idempotent() {
    let (fs, cg) = hybrid();
    cg.create().unwrap();
    fs.add_dir(format!("/sys/fs/cgroup/systemd/{C1}/init.scope"));
    fs.add_dir("/sys/fs/cgroup/memory/hutch-x/other");
    cg.destroy().unwrap();
    assert!(!fs.has_dir(format!("/sys/fs/cgroup/systemd/{C1}")));
    assert!(!fs.has_dir("/sys/fs/cgroup/systemd/hutch-x"));
    assert!(
        fs.has_dir("/sys/fs/cgroup/memory/hutch-x/other"),
        "a sibling's cgroup must stay"
    );
    assert!(fs.has_dir("/sys/fs/cgroup/memory"));
    cg.destroy().unwrap();
    cg.kill_all().unwrap();
    assert!(cg.procs().unwrap().is_empty());
}
