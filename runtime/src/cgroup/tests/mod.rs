//! Unit tests of both drivers over the fake filesystem (`v1`, `v2`), and the one root
//! test that drives the real host's cgroups.

mod v1;
mod v2;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;

use super::*;

/// The container's relative path in the fake tests.
const C1: &str = "hutch-x/c1";

/// (file name, value) of the writes since `from` under `prefix`.
fn file_writes(fs: &FakeCgroupFs, from: usize, prefix: &str) -> Vec<(String, String)> {
    fs.writes()[from..]
        .iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .map(|(p, v)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                v.clone(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn open_picks_the_driver_from_the_layout() {
    let fs = Arc::new(FakeCgroupFs::new());
    let hybrid = CgroupLayout::from_mountinfo(layout::tests::HYBRID, fs.as_ref()).unwrap();
    assert_eq!(open(&hybrid, "/hutch-x/c1/", fs.clone()).paths().len(), 10);
    let unified = CgroupLayout::from_mountinfo(layout::tests::UNIFIED, fs.as_ref()).unwrap();
    assert_eq!(
        open(&unified, C1, fs.clone()).paths(),
        vec![Path::new("/sys/fs/cgroup/hutch-x/c1").to_path_buf()]
    );
    // A layout deserialised from nothing is not a reason to panic.
    let empty = CgroupLayout {
        hierarchies: Vec::new(),
    };
    let cg = open(&empty, C1, fs);
    assert!(cg.paths().is_empty());
    assert!(cg.procs().unwrap().is_empty());
}

/// Removes the test's cgroup even when an assertion failed half-way.
struct HostCgroup {
    cg: Box<dyn CgroupDriver>,
    child: Option<Child>,
}

impl Drop for HostCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.thaw();
        let _ = self.cg.kill_all();
        let _ = self.cg.destroy();
    }
}

/// The value of the file `name` of the hierarchy holding `controller`.
fn host_value(layout: &CgroupLayout, rel: &str, controller: &str, name: &str) -> String {
    let h = match layout.unified_hierarchy() {
        Some(h) => h,
        None => layout.v1(controller).expect("controller mounted"),
    };
    let path = h.mountpoint.join(rel).join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Runs on the real host, as root: the driver against the kernel's own cgroupfs.
#[test]
fn real_host_cgroup_lifecycle() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1"),
            "real_host_cgroup_lifecycle needs root and HUTCH_REQUIRED_TESTS=1 is set"
        );
        eprintln!("skipping real_host_cgroup_lifecycle: needs root");
        return;
    }
    let layout = CgroupLayout::detect().unwrap();
    let rel = format!("hutch-unit-{}/c1", std::process::id());
    let mut guard = HostCgroup {
        cg: open(&layout, &rel, Arc::new(RealCgroupFs)),
        child: None,
    };
    let cg = &guard.cg;
    cg.create().unwrap();
    cg.create().unwrap();
    // Swap not allowed: on v1 this sets memsw too, in the order the kernel accepts.
    let limits = Limits {
        memory: Some(64 << 20),
        memory_swap: false,
        processes: Some(50),
        ..Limits::default()
    };
    cg.apply_limits(&limits).unwrap();
    let mem_file = if layout.is_unified() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(host_value(&layout, &rel, "memory", mem_file), "67108864");
    assert_eq!(host_value(&layout, &rel, "pids", "pids.max"), "50");
    // Lowering and raising again exercise the memsw ordering on v1.
    for bytes in [32u64 << 20, 128 << 20] {
        cg.apply_limits(&Limits {
            memory: Some(bytes),
            ..limits.clone()
        })
        .unwrap();
        assert_eq!(
            host_value(&layout, &rel, "memory", mem_file),
            bytes.to_string()
        );
    }

    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    guard.child = Some(child);
    let cg = &guard.cg;
    cg.add_process(pid).unwrap();
    assert!(cg.usage().unwrap().processes >= 1);
    assert_eq!(cg.procs().unwrap(), vec![pid]);
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());

    // Clearing limits on a running container.
    cg.apply_limits(&Limits::default()).unwrap();
    // v1 shows "unlimited" as the largest page-aligned counter, e.g. 9223372036854771712.
    let mem = host_value(&layout, &rel, "memory", mem_file);
    assert!(
        mem == "max" || mem.parse::<u64>().unwrap() > 1 << 62,
        "{mem}"
    );
    assert_eq!(host_value(&layout, &rel, "pids", "pids.max"), "max");

    // Frozen first: kill_all must cope with a frozen container.
    cg.freeze().unwrap();
    cg.kill_all().unwrap();
    assert!(cg.procs().unwrap().is_empty());
    let status = guard.child.take().unwrap().wait().unwrap();
    assert!(!status.success(), "sleep was killed");

    let cg = &guard.cg;
    cg.destroy().unwrap();
    cg.destroy().unwrap();
    for p in cg.paths() {
        assert!(!p.exists(), "{} left behind", p.display());
        let parent = p.parent().unwrap();
        assert!(!parent.exists(), "{} left behind", parent.display());
    }
}
