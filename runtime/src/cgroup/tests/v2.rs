//! The v2 driver on a pure cgroup v2 layout, over the fake filesystem.

use std::path::Path;
use std::sync::Arc;

use super::super::layout::tests::UNIFIED;
use super::super::*;
use super::{file_writes, pairs, C1};
use crate::spec::{CpuAllowance, Limits};

const DIR: &str = "/sys/fs/cgroup/hutch-x/c1";

/// A v2 host whose root offers what systemd hosts offer, plus hugetlb.
fn unified() -> (Arc<FakeCgroupFs>, Box<dyn CgroupDriver>) {
    let fs = Arc::new(FakeCgroupFs::new());
    fs.add_file(
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids\n",
    );
    fs.add_file(
        "/sys/fs/cgroup/cgroup.subtree_control",
        "cpu io memory pids\n",
    );
    let layout = CgroupLayout::from_mountinfo(UNIFIED, fs.as_ref()).unwrap();
    let cg = open(&layout, C1, fs.clone());
    (fs, cg)
}

/// What the kernel would show in the container's fresh cgroup.
fn populate(fs: &FakeCgroupFs, dir: &str) {
    for (f, v) in [
        ("cgroup.controllers", "cpuset cpu io memory pids"),
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("cpu.max", "max 100000"),
        ("pids.max", "max"),
        ("cpuset.cpus", ""),
        ("cgroup.procs", ""),
        ("cgroup.freeze", "0"),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
    ] {
        fs.add_file(Path::new(dir).join(f), v);
    }
}

#[test]
fn create_enables_missing_controllers_top_down() {
    let (fs, cg) = unified();
    // What the kernel shows in hutch-x once the root enabled controllers for it.
    fs.add_file(
        "/sys/fs/cgroup/hutch-x/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids",
    );
    cg.create().unwrap();
    let subtree = "cgroup.subtree_control";
    // The root already had cpu io memory pids: only what it lacked, then the next level.
    assert_eq!(
        file_writes(&fs, 0, "/sys/fs/cgroup"),
        pairs(&[
            (subtree, "+cpuset"),
            (subtree, "+hugetlb"),
            (subtree, "+cpuset"),
            (subtree, "+cpu"),
            (subtree, "+io"),
            (subtree, "+memory"),
            (subtree, "+hugetlb"),
            (subtree, "+pids"),
        ])
    );
    assert_eq!(
        fs.writes()[2].0,
        Path::new("/sys/fs/cgroup/hutch-x/cgroup.subtree_control")
    );
    assert!(fs.has_dir(DIR));
    // The container's own cgroup enables nothing: its init must be able to live in it.
    assert!(fs
        .content(format!("{DIR}/cgroup.subtree_control"))
        .is_none());
    assert_eq!(
        cg.container_mounts(),
        vec![CgroupMountStep::Cgroup2 { dir: String::new() }]
    );
}

#[test]
fn create_enables_only_what_the_parent_has() {
    let fs = Arc::new(FakeCgroupFs::new());
    fs.add_file("/sys/fs/cgroup/cgroup.controllers", "memory pids\n");
    let layout = CgroupLayout::from_mountinfo(UNIFIED, fs.as_ref()).unwrap();
    let cg = open(&layout, "a/b/c", fs.clone());
    fs.add_file("/sys/fs/cgroup/a/cgroup.controllers", "memory pids");
    fs.add_file("/sys/fs/cgroup/a/b/cgroup.controllers", "pids");
    cg.create().unwrap();
    let written: Vec<(String, String)> = fs
        .writes()
        .into_iter()
        .map(|(p, v)| (p.to_string_lossy().into_owned(), v))
        .collect();
    assert_eq!(
        written,
        pairs(&[
            ("/sys/fs/cgroup/cgroup.subtree_control", "+memory"),
            ("/sys/fs/cgroup/cgroup.subtree_control", "+pids"),
            ("/sys/fs/cgroup/a/cgroup.subtree_control", "+memory"),
            ("/sys/fs/cgroup/a/cgroup.subtree_control", "+pids"),
            ("/sys/fs/cgroup/a/b/cgroup.subtree_control", "+pids"),
        ])
    );
}

#[test]
fn limits_render_and_clear() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate(&fs, DIR);
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
    let c = |f: &str| fs.content(format!("{DIR}/{f}")).unwrap();
    assert_eq!(c("memory.max"), "67108864");
    assert_eq!(c("memory.swap.max"), "0");
    assert_eq!(c("cpuset.cpus"), "0-2");
    assert_eq!(c("cpu.max"), "20000 100000");
    assert_eq!(c("pids.max"), "99");
    // An explicit set wins over a count.
    cg.apply_limits(&Limits {
        cpu_set: Some("4,6-7".into()),
        ..limits.clone()
    })
    .unwrap();
    assert_eq!(c("cpuset.cpus"), "4,6-7");
    // Swap allowed with a memory limit.
    cg.apply_limits(&Limits {
        memory_swap: true,
        ..limits
    })
    .unwrap();
    assert_eq!(c("memory.swap.max"), "max");
    let before = fs.writes().len();
    cg.apply_limits(&Limits::default()).unwrap();
    assert_eq!(
        file_writes(&fs, before, DIR),
        pairs(&[
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("cpuset.cpus", "\n"),
            ("cpu.max", "max 100000"),
            ("pids.max", "max"),
        ])
    );
}

#[test]
fn a_missing_controller_is_named_and_a_failed_write_too() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    fs.add_file(format!("{DIR}/cgroup.controllers"), "cpu pids");
    let err = cg
        .apply_limits(&Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::CgroupControllerMissing { controller } if controller == "memory")
    );
    cg.apply_limits(&Limits::default()).unwrap();
    // cpu.max is the first write; pids.max the second.
    fs.fail_nth_write(1, libc::EINVAL);
    let err = cg.apply_limits(&Limits::default()).unwrap_err();
    assert!(
        err.to_string().contains(&format!("{DIR}/pids.max")),
        "{err}"
    );
}

#[test]
fn exec_falls_back_to_a_leaf_when_the_cgroup_is_busy() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate(&fs, DIR);
    cg.add_exec_process(41).unwrap();
    assert_eq!(
        fs.content(format!("{DIR}/cgroup.procs")).as_deref(),
        Some("41")
    );
    // Once systemd inside enabled controllers, the kernel refuses processes there.
    fs.fail_writes_to(format!("{DIR}/cgroup.procs"), libc::EBUSY);
    cg.add_exec_process(42).unwrap();
    let leaf = format!("{DIR}/{EXEC_LEAF}/cgroup.procs");
    assert_eq!(fs.content(leaf).as_deref(), Some("42"));
    assert!(cg.add_process(43).is_err());
}

#[test]
fn delegate_hands_over_the_directory_and_its_files() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate(&fs, DIR);
    for f in ["cgroup.threads", "cgroup.subtree_control", "memory.reclaim"] {
        fs.add_file(format!("{DIR}/{f}"), "");
    }
    cg.delegate(100000, 100000).unwrap();
    let chowned: Vec<String> = fs
        .chowns()
        .into_iter()
        .map(|(p, ..)| p.to_string_lossy().into_owned())
        .collect();
    let expected: Vec<String> = [
        "",
        "/cgroup.procs",
        "/cgroup.threads",
        "/cgroup.subtree_control",
        "/memory.reclaim",
    ]
    .iter()
    .map(|f| format!("{DIR}{f}"))
    .collect();
    assert_eq!(chowned, expected);
}

#[test]
fn usage_reads_the_counters() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate(&fs, DIR);
    fs.add_file(format!("{DIR}/memory.current"), "4096\n");
    fs.add_file(format!("{DIR}/memory.swap.current"), "512\n");
    fs.add_file(
        format!("{DIR}/cpu.stat"),
        "usage_usec 7\nuser_usec 5\nsystem_usec 2\n",
    );
    fs.add_file(format!("{DIR}/pids.current"), "2\n");
    assert_eq!(
        cg.usage().unwrap(),
        CgroupUsage {
            memory_bytes: 4096,
            memory_peak_bytes: None,
            swap_bytes: Some(512),
            cpu_time_ns: 7000,
            processes: 2,
        }
    );
    fs.add_file(format!("{DIR}/memory.peak"), "8192\n");
    assert_eq!(cg.usage().unwrap().memory_peak_bytes, Some(8192));
}

#[test]
fn freeze_polls_cgroup_events_and_thaws() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate(&fs, DIR);
    let events = format!("{DIR}/cgroup.events");
    fs.queue_reads(
        &events,
        &["populated 1\nfrozen 0\n", "populated 1\nfrozen 0\n"],
    );
    fs.add_file(&events, "populated 1\nfrozen 1\n");
    cg.freeze().unwrap();
    assert_eq!(fs.pending_reads(&events), 0);
    assert_eq!(
        fs.content(format!("{DIR}/cgroup.freeze")).as_deref(),
        Some("1")
    );
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert_eq!(
        fs.content(format!("{DIR}/cgroup.freeze")).as_deref(),
        Some("0")
    );
}

#[test]
fn kill_uses_cgroup_kill_and_destroy_is_idempotent() {
    let (fs, cg) = unified();
    cg.create().unwrap();
    populate(&fs, DIR);
    fs.add_file(format!("{DIR}/cgroup.kill"), "");
    fs.add_dir(format!("{DIR}/init.scope"));
    fs.add_dir(format!("{DIR}/{EXEC_LEAF}"));
    fs.add_dir("/sys/fs/cgroup/hutch-x/other");
    cg.kill_all().unwrap();
    assert_eq!(
        fs.content(format!("{DIR}/cgroup.kill")).as_deref(),
        Some("1")
    );
    cg.destroy().unwrap();
    assert!(!fs.has_dir(DIR));
    assert!(fs.has_dir("/sys/fs/cgroup/hutch-x/other"));
    cg.destroy().unwrap();
    cg.kill_all().unwrap();
    assert_eq!(cg.paths(), vec![Path::new(DIR).to_path_buf()]);
}
