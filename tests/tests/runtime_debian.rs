//! End-to-end: a Debian 12 root filesystem made by debootstrap boots systemd as PID 1 in
//! an unprivileged container, and systemd reaches running (or degraded) state.
//! Needs root; set HUTCH_TEST_DEBIAN=0 to skip locally (CI runs it).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use hutch_runtime::{container, ContainerSpec, ExecRequest, ExecStdio, IdMap};
use hutch_tests::{
    assert_no_leftovers, debian_rootfs, helper_bin, require_root, unique_name, CgroupGuard, TestDir,
};

fn run(rd: &std::path::Path, command: &[&str]) -> (i32, String) {
    let req = ExecRequest {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        cwd: None,
        uid: 0,
        gid: 0,
        pty: None,
    };
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let null = || -> std::os::fd::OwnedFd {
        fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap()
            .into()
    };
    let session = hutch_runtime::exec(
        &helper_bin(),
        rd,
        &req,
        ExecStdio::Pipes {
            stdin: null(),
            stdout: out_w,
            stderr: null(),
        },
    )
    .expect("exec");
    let mut out = String::new();
    fs::File::from(out_r).read_to_string(&mut out).unwrap();
    (session.wait().unwrap().code(), out.trim().to_string())
}

#[test]
fn debian_boots_systemd_unprivileged() {
    if !require_root("debian_boots_systemd_unprivileged") {
        return;
    }
    if std::env::var("HUTCH_TEST_DEBIAN").as_deref() == Ok("0")
        && std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1")
    {
        hutch_tests::skipped("debian_boots_systemd_unprivileged", "HUTCH_TEST_DEBIAN=0");
        return;
    }
    let dir = TestDir::new();
    let name = unique_name("deb");
    let rootfs = dir.path().join("rootfs");
    debian_rootfs(&rootfs).expect("build the Debian root filesystem");
    let cgroup = format!("hutch-test-{name}/{name}");
    let _cg = CgroupGuard::new(&cgroup);
    let spec = ContainerSpec::new(
        &name,
        &rootfs,
        Some(IdMap::single(1_000_000, 65536)),
        &cgroup,
    );
    let rd = dir.path().join("run");
    hutch_runtime::start(&helper_bin(), &rd, &spec).expect("start");

    let result = std::panic::catch_unwind(|| {
        // Exec'd as /sbin/init, systemd renames itself early in its start.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut comm = String::new();
        while Instant::now() < deadline && comm != "systemd" {
            comm = run(&rd, &["cat", "/proc/1/comm"]).1;
        }
        assert_eq!(comm, "systemd");
        let mut state = String::new();
        while Instant::now() < deadline {
            state = run(&rd, &["systemctl", "is-system-running"]).1;
            if state == "running" || state == "degraded" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let failed = run(&rd, &["systemctl", "--failed", "--no-legend"]).1;
        eprintln!("systemd reached {state:?}; failed units: {failed}");
        assert!(
            state == "running" || state == "degraded",
            "systemd is {state:?}; failed units:\n{failed}\nconsole:\n{}",
            String::from_utf8_lossy(&container::console_log(&rd).unwrap_or_default())
        );
        assert_eq!(run(&rd, &["hostname"]).1, name);
    });
    // systemd halts on SIGRTMIN+3; a clean stop must end it without our SIGKILL.
    let record = container::stop(&rd, Duration::from_secs(30), false).expect("stop");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_ne!(
        record.signal,
        Some(9),
        "systemd did not halt cleanly: {record:?}"
    );
    assert_no_leftovers(dir.path(), &cgroup);
}
