//! CI soak smoke: 1,000 create/start/exec/stop/delete cycles of busybox containers with a
//! NIC on a managed bridge, on a few client threads at once. Afterwards the daemon's open
//! fds and threads come back to the baseline taken at rest after warm-up, its RSS stays
//! within 1.5× of that baseline, and nothing of the containers is left on the host
//! (cgroups, mounts, processes, veths on the bridge). The long soak with plots is
//! `scripts/bench.sh --soak N`.

use std::process::Command;
use std::time::{Duration, Instant};

use hutch_tests::daemon::cgroup_prefix;
use hutch_tests::{assert_no_leftovers, require_root, unique_name, wait_until, TestDaemon, Via};

/// Cycles in all, and the client threads they are spread over.
const CYCLES: usize = 1000;
const THREADS: usize = 4;
/// Cycles before the baseline is taken (caches filled, pools grown).
const WARM_UP: usize = 40;

/// The daemon's resources that must not grow with the number of cycles.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    fds: usize,
    threads: usize,
    rss_kib: usize,
}

fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let field = |name: &str| -> usize {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    Footprint {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("daemon fds")
            .count(),
        threads: field("Threads:"),
        rss_kib: field("VmRSS:"),
    }
}

/// The footprint at rest: the least fds and threads seen over a quiet spell long enough for
/// the runtime's idle blocking threads to end (tokio keeps them 10 s).
fn at_rest(pid: u32) -> Footprint {
    let until = Instant::now() + Duration::from_secs(12);
    let mut least = footprint(pid);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let now = footprint(pid);
        least.fds = least.fds.min(now.fds);
        least.threads = least.threads.min(now.threads);
        least.rss_kib = now.rss_kib;
    }
    least
}

/// `count` cycles of container `name`, each create, start, exec, stop, delete.
fn cycles(d: &TestDaemon, name: &str, count: usize) {
    for i in 0..count {
        for args in [
            &["init", "bb", name][..],
            &["start", name],
            &["exec", name, "--", "true"],
            &["stop", name, "--force"],
            &["delete", name],
        ] {
            let out = d.hutch(args, b"");
            assert!(
                out.status.success(),
                "cycle {i} of {name}: hutch {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `total` cycles spread over `THREADS` client threads, each on its own container name.
fn cycles_in_parallel(d: &TestDaemon, names: &[String], total: usize) {
    std::thread::scope(|s| {
        for (t, name) in names.iter().enumerate() {
            let count = total / THREADS + usize::from(t < total % THREADS);
            s.spawn(move || cycles(d, name, count));
        }
    });
}

/// Host-side interfaces still enslaved to `bridge`.
fn ports_of(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip link show master");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
        .collect()
}

#[test]
fn a_thousand_cycles_leave_fds_threads_and_memory_where_they_were() {
    if !require_root("a_thousand_cycles_leave_fds_threads_and_memory_where_they_were") {
        return;
    }
    let bridge = unique_name("sk");
    let d = TestDaemon::start_with(&["--storage-backend", "dir", "--network-bridge", &bridge]);
    d.import_busybox(Via::Hutch);
    let pid = d.pid().expect("daemon pid");
    let names: Vec<String> = (0..THREADS).map(|_| unique_name("soak")).collect();

    cycles_in_parallel(&d, &names, WARM_UP);
    let base = at_rest(pid);
    eprintln!("baseline after {WARM_UP} cycles: {base:?}");

    cycles_in_parallel(&d, &names, CYCLES - WARM_UP);
    eprintln!("after {CYCLES} cycles: {:?}", footprint(pid));

    // Idle threads and connections end by themselves: wait for the daemon to settle.
    wait_until(
        "the daemon's fds and threads back to the baseline",
        Duration::from_secs(120),
        || {
            let now = footprint(pid);
            now.fds <= base.fds && now.threads <= base.threads
        },
    );
    let limit = base.rss_kib * 3 / 2;
    wait_until(
        &format!(
            "the daemon's RSS within 1.5x of the baseline {} KiB",
            base.rss_kib
        ),
        Duration::from_secs(60),
        || footprint(pid).rss_kib <= limit,
    );

    let list = d.hutch_ok(&["list", "--format", "csv", "-c", "n"]);
    assert!(list.trim().is_empty(), "instances left: {list}");
    let ports = ports_of(&bridge);
    assert!(ports.is_empty(), "veths left on {bridge}: {ports:?}");
    // The daemon's cgroup tree and mounts under its containers' directory.
    assert_no_leftovers(
        &d.path().join("storage-pools/default/containers"),
        &cgroup_prefix(d.path()),
    );
}
