//! End-to-end: the runtime boots a busybox-init container, unprivileged, and everything
//! around it works on the real kernel. Needs root; every test cleans up after itself.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hutch_runtime::{
    container, ContainerSpec, ExecRequest, ExecStdio, IdMap, RuntimeError, Status, WindowSize,
};
use hutch_tests::{
    assert_no_leftovers, busybox_rootfs, helper_bin, hutchd_bin, require_root, unique_name,
    wait_until, CgroupGuard, TestDir,
};

const HOST_BASE: u32 = 1_000_000;

/// A booted container that is stopped and cleaned up when dropped, even on panic.
struct Booted {
    name: String,
    rd: PathBuf,
    rootfs: PathBuf,
    cgroup: String,
    init_pid: i32,
    _cg: CgroupGuard,
    dir: TestDir,
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = container::stop(&self.rd, Duration::from_secs(1), true);
    }
}

fn prepare(privileged: bool) -> (TestDir, ContainerSpec, CgroupGuard) {
    let dir = TestDir::new();
    let name = unique_name("bb");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs).expect("build busybox rootfs");
    let cgroup = format!("hutch-test-{name}/{name}");
    let guard = CgroupGuard::new(&cgroup);
    let idmap = (!privileged).then(|| IdMap::single(HOST_BASE, 65536));
    let spec = ContainerSpec::new(&name, &rootfs, idmap, &cgroup);
    (dir, spec, guard)
}

fn boot_spec(dir: TestDir, spec: ContainerSpec, guard: CgroupGuard) -> Booted {
    let rd = dir.path().join("run");
    let started = hutch_runtime::start(&helper_bin(), &rd, &spec).expect("start container");
    // The start says where its time went, each step once and in order: the starter's
    // two, then the monitor's.
    let steps: Vec<&str> = started.steps.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        steps,
        [
            "spawn",
            "helper",
            "cgroup",
            "userns",
            "root",
            "prepare",
            "namespaces",
            "mounts",
            "hooks",
            "exec",
            "publish"
        ]
    );
    Booted {
        name: spec.name.clone(),
        rd,
        rootfs: spec.rootfs.clone(),
        cgroup: spec.cgroup.clone(),
        init_pid: started.init_pid,
        _cg: guard,
        dir,
    }
}

fn boot() -> Booted {
    let (dir, spec, guard) = prepare(false);
    boot_spec(dir, spec, guard)
}

struct Output {
    code: i32,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

fn exec_as(c: &Booted, uid: u32, command: &[&str], stdin: &[u8]) -> Output {
    let req = ExecRequest {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::from([("HOME".to_string(), "/root".to_string())]),
        cwd: None,
        uid,
        gid: uid,
        pty: None,
    };
    let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let session = hutch_runtime::exec(
        &helper_bin(),
        &c.rd,
        &req,
        ExecStdio::Pipes {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        },
    )
    .expect("exec");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let mut f = fs::File::from(in_w);
        let _ = f.write_all(&input);
    });
    let read_all = |fd: OwnedFd| {
        std::thread::spawn(move || {
            let mut s = String::new();
            fs::File::from(fd).read_to_string(&mut s).unwrap();
            s
        })
    };
    let (out, err) = (read_all(out_r), read_all(err_r));
    let exit = session.wait().expect("wait for exec");
    writer.join().unwrap();
    Output {
        code: exit.code(),
        signal: exit.signal,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn exec(c: &Booted, command: &[&str]) -> Output {
    exec_as(c, 0, command, b"")
}

fn cgroup_file(c: &Booted, v1_controller: &str, v1_file: &str, v2_file: &str) -> String {
    let v1 = Path::new("/sys/fs/cgroup")
        .join(v1_controller)
        .join(&c.cgroup)
        .join(v1_file);
    let path = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup").join(&c.cgroup).join(v2_file)
    } else {
        v1
    };
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn busybox_boots_as_pid_1_and_exec_sees_init() {
    if !require_root("busybox_boots_as_pid_1_and_exec_sees_init") {
        return;
    }
    let c = boot();
    let out = exec(&c, &["cat", "/proc/1/comm"]);
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "init"),
        "stderr: {}",
        out.stderr
    );
    assert_eq!(exec(&c, &["hostname"]).stdout.trim(), c.name);
    let env = fs::read(format!("/proc/{}/environ", c.init_pid)).unwrap();
    assert!(env.split(|b| *b == 0).any(|v| v == b"container=lxc"));
    // The namespaces are all new.
    for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup", "user"] {
        let ours = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = fs::read_link(format!("/proc/{}/ns/{ns}", c.init_pid)).unwrap();
        assert_ne!(ours, theirs, "{ns} namespace is shared with the host");
    }
    // The standard mounts and devices are there.
    let mounts = exec(&c, &["cat", "/proc/mounts"]).stdout;
    for want in [
        " /proc proc",
        " /sys sysfs ro",
        " /dev tmpfs",
        " /dev/pts devpts",
        " /dev/shm tmpfs",
        " /run tmpfs",
    ] {
        assert!(mounts.contains(want), "{want} missing from\n{mounts}");
    }
    let devs = exec(
        &c,
        &[
            "sh",
            "-c",
            "echo x > /dev/null && head -c 4 /dev/zero | wc -c && ls /dev",
        ],
    );
    assert_eq!(devs.code, 0, "{}", devs.stderr);
    for want in [
        "console", "full", "null", "ptmx", "pts", "random", "tty", "urandom", "zero", "shm",
    ] {
        assert!(
            devs.stdout.split_whitespace().any(|w| w == want),
            "/dev/{want} missing: {}",
            devs.stdout
        );
    }
    assert!(
        mounts.contains("/sys/fs/cgroup"),
        "no cgroup view:\n{mounts}"
    );
}

#[test]
fn exec_reports_exit_codes_signals_and_keeps_streams_apart() {
    if !require_root("exec_reports_exit_codes_signals_and_keeps_streams_apart") {
        return;
    }
    let c = boot();
    assert_eq!(exec(&c, &["sh", "-c", "exit 7"]).code, 7);
    assert_eq!(exec(&c, &["true"]).code, 0);
    let killed = exec(&c, &["sh", "-c", "kill -9 $$"]);
    assert_eq!((killed.signal, killed.code), (Some(9), 137));
    let out = exec_as(
        &c,
        0,
        &["sh", "-c", "cat; echo to-stderr >&2; exit 3"],
        b"from-stdin",
    );
    assert_eq!(out.code, 3);
    assert_eq!(out.stdout, "from-stdin");
    assert_eq!(out.stderr, "to-stderr\n");
    let missing = exec(&c, &["no-such-command"]);
    assert_eq!(missing.code, 127);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

#[test]
fn exec_on_a_pty_has_a_terminal_of_the_right_size() {
    if !require_root("exec_on_a_pty_has_a_terminal_of_the_right_size") {
        return;
    }
    let c = boot();
    let req = ExecRequest {
        command: vec![
            "sh".into(),
            "-c".into(),
            "tty; stty size; read line; echo got:$line; stty size".into(),
        ],
        env: BTreeMap::new(),
        cwd: None,
        uid: 0,
        gid: 0,
        pty: Some(WindowSize {
            cols: 100,
            rows: 30,
        }),
    };
    let mut session =
        hutch_runtime::exec(&helper_bin(), &c.rd, &req, ExecStdio::Pty).expect("exec on pty");
    let mut master = session.take_pty().expect("pty master");
    let mut reader = master.try_clone().unwrap();
    let collected = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = collected.clone();
    let pump = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_until(
        "the pty to show the first size",
        Duration::from_secs(10),
        || collected.lock().unwrap().contains("30 100"),
    );
    hutch_runtime::exec::set_window_size(
        std::os::fd::AsFd::as_fd(&master),
        WindowSize {
            cols: 120,
            rows: 40,
        },
    )
    .unwrap();
    master.write_all(b"hello\n").unwrap();
    let exit = session.wait().unwrap();
    drop(master);
    wait_until("the resized pty", Duration::from_secs(10), || {
        collected.lock().unwrap().contains("40 120")
    });
    let text = collected.lock().unwrap().clone();
    assert_eq!(exit.code(), 0, "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("got:hello"), "{text}");
    drop(pump);
}

#[test]
fn exec_forwards_signals() {
    if !require_root("exec_forwards_signals") {
        return;
    }
    let c = boot();
    let req = ExecRequest {
        command: vec!["sleep".into(), "30".into()],
        env: BTreeMap::new(),
        cwd: None,
        uid: 0,
        gid: 0,
        pty: None,
    };
    let null = || -> OwnedFd {
        fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap()
            .into()
    };
    let session = hutch_runtime::exec(
        &helper_bin(),
        &c.rd,
        &req,
        ExecStdio::Pipes {
            stdin: null(),
            stdout: null(),
            stderr: null(),
        },
    )
    .unwrap();
    session.signal(15).unwrap();
    let exit = session.wait().unwrap();
    assert_eq!(exit.signal, Some(15));
}

#[test]
fn root_inside_is_an_unprivileged_host_range() {
    if !require_root("root_inside_is_an_unprivileged_host_range") {
        return;
    }
    let c = boot();
    let uid_map = fs::read_to_string(format!("/proc/{}/uid_map", c.init_pid)).unwrap();
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(&fields[..3], &["0", &HOST_BASE.to_string(), "65536"]);
    let status = fs::read_to_string(format!("/proc/{}/status", c.init_pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains(&HOST_BASE.to_string()), "{uid_line}");

    assert_eq!(exec(&c, &["touch", "/root/made-by-root"]).code, 0);
    let out = exec_as(&c, 1000, &["touch", "/tmp/made-by-1000"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(exec_as(&c, 1000, &["id", "-u"], b"").stdout.trim(), "1000");
    // Seen from the host through the container's root, owners are in the host range...
    let through = |p: &str| fs::metadata(format!("/proc/{}/root{p}", c.init_pid)).unwrap();
    assert_eq!(through("/root/made-by-root").uid(), HOST_BASE);
    assert_eq!(through("/tmp/made-by-1000").uid(), HOST_BASE + 1000);
    assert_eq!(through("/tmp/made-by-1000").gid(), HOST_BASE + 1000);
    // ...while on disk the idmapped mount stored them unshifted: nothing was chowned.
    assert_eq!(
        fs::metadata(c.rootfs.join("root/made-by-root"))
            .unwrap()
            .uid(),
        0
    );
    assert_eq!(fs::metadata(c.rootfs.join("bin/busybox")).unwrap().uid(), 0);
    // Host-wide capabilities are gone from init's bounding set.
    let bnd = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    let caps = u64::from_str_radix(bnd.split_whitespace().nth(1).unwrap(), 16).unwrap();
    for cap in [16, 17, 25, 32, 33] {
        assert_eq!(caps & (1 << cap), 0, "capability {cap} kept: {bnd}");
    }
    // Container root cannot reach the host: setting the clock is refused.
    let date = exec(&c, &["date", "-s", "2001-01-01"]);
    assert!(date.stderr.contains("not permitted"), "{}", date.stderr);
}

#[test]
fn no_descriptor_leaks_into_the_container() {
    if !require_root("no_descriptor_leaks_into_the_container") {
        return;
    }
    let c = boot();
    // Init's fds with what each is. Busybox init opens files of its own while it boots
    // (/etc/inittab), so an extra fd counts only if it stays: a leaked one never closes.
    let init_fds = || -> Vec<(String, String)> {
        let dir = format!("/proc/{}/fd", c.init_pid);
        let mut fds: Vec<(String, String)> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| {
                let target = fs::read_link(e.path()).unwrap_or_default();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, target.display().to_string())
            })
            .collect();
        fds.sort();
        fds
    };
    let mut fds = init_fds();
    for _ in 0..200 {
        if fds
            .iter()
            .all(|(fd, _)| ["0", "1", "2"].contains(&fd.as_str()))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
        fds = init_fds();
    }
    let names: Vec<&str> = fds.iter().map(|(fd, _)| fd.as_str()).collect();
    assert_eq!(names, vec!["0", "1", "2"], "init has extra fds: {fds:?}");
    let out = exec(&c, &["sh", "-c", "ls /proc/$$/fd"]);
    let mut fds: Vec<&str> = out.stdout.split_whitespace().collect();
    fds.sort();
    // sh's own fds plus the directory ls reads: nothing of the helper's or ours.
    assert!(
        fds.iter().all(|fd| ["0", "1", "2", "10", "3"].contains(fd)),
        "{fds:?}"
    );
    let nnp = fs::read_to_string(format!("/proc/{}/status", c.init_pid)).unwrap();
    assert!(
        nnp.contains("NoNewPrivs:\t0"),
        "init must not have no_new_privs"
    );
}

#[test]
fn limits_apply_and_read_back_from_the_host() {
    if !require_root("limits_apply_and_read_back_from_the_host") {
        return;
    }
    let (dir, mut spec, guard) = prepare(false);
    spec.limits.memory = Some(128 << 20);
    spec.limits.processes = Some(200);
    let c = boot_spec(dir, spec.clone(), guard);
    assert_eq!(
        cgroup_file(&c, "memory", "memory.limit_in_bytes", "memory.max"),
        (128u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(&c, "pids", "pids.max", "pids.max"), "200");
    // Live change on the running container.
    let mut limits = spec.limits.clone();
    limits.memory = Some(64 << 20);
    container::set_limits(&c.rd, &limits).unwrap();
    assert_eq!(
        cgroup_file(&c, "memory", "memory.limit_in_bytes", "memory.max"),
        (64u64 << 20).to_string()
    );
    let usage = container::usage(&c.rd).unwrap();
    assert!(usage.memory_bytes > 0 && usage.processes >= 1, "{usage:?}");
    // The container sees its own cgroup as the root of its view.
    let inside = exec(&c, &["cat", "/proc/self/cgroup"]).stdout;
    assert!(
        !inside.contains(&c.cgroup),
        "host cgroup path leaks inside: {inside}"
    );
}

#[test]
fn freeze_and_thaw() {
    if !require_root("freeze_and_thaw") {
        return;
    }
    let c = boot();
    container::freeze(&c.rd).unwrap();
    assert!(container::is_frozen(&c.rd).unwrap());
    let state = fs::read_to_string(format!("/proc/{}/stat", c.init_pid)).unwrap();
    let after = &state[state.rfind(')').unwrap() + 2..];
    assert!(
        after.starts_with('D') || after.starts_with('S') || after.starts_with('T'),
        "{state}"
    );
    container::thaw(&c.rd).unwrap();
    assert!(!container::is_frozen(&c.rd).unwrap());
    assert_eq!(exec(&c, &["true"]).code, 0);
}

#[test]
fn killing_the_starter_leaves_the_container_running() {
    if !require_root("killing_the_starter_leaves_the_container_running") {
        return;
    }
    let (dir, spec, guard) = prepare(false);
    let state_dir = dir.path().join("state");
    // A starter that lives on after starting, like a daemon; then kill -9 its whole group.
    let script = format!(
        "{} --dir {} container start {} --rootfs {} && sleep 600",
        hutchd_bin().display(),
        state_dir.display(),
        spec.name,
        spec.rootfs.display()
    );
    let mut starter = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(starter.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let init_pid: i32 = line.trim().parse().expect("starter printed the init pid");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(starter.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    starter.wait().unwrap();

    let rd = state_dir.join("containers").join(&spec.name);
    let cgroup = match container::status(&rd).unwrap() {
        Status::Running(state) => {
            assert_eq!(state.init_pid, init_pid);
            state.cgroup
        }
        other => panic!("container died with its starter: {other:?}"),
    };
    let _cg = CgroupGuard::new(&cgroup);
    let c = Booted {
        name: spec.name.clone(),
        rd,
        rootfs: spec.rootfs.clone(),
        cgroup,
        init_pid,
        _cg: guard,
        dir,
    };
    assert_eq!(exec(&c, &["cat", "/proc/1/comm"]).stdout.trim(), "init");
}

#[test]
fn clean_stop_is_quick_and_leaves_nothing() {
    if !require_root("clean_stop_is_quick_and_leaves_nothing") {
        return;
    }
    let c = boot();
    let monitor_pid = match container::status(&c.rd).unwrap() {
        Status::Running(s) => s.monitor_pid,
        other => panic!("{other:?}"),
    };
    // Right after the start, maybe before init has its handlers: the halt signal is sent
    // again until init handles it.
    let record = container::stop(&c.rd, Duration::from_secs(20), false).unwrap();
    // busybox init halts on SIGPWR: it ends by itself, not by our SIGKILL.
    assert_ne!(
        record.signal,
        Some(9),
        "init ignored its halt signal: {record:?}"
    );
    assert_eq!(
        container::status(&c.rd).unwrap(),
        Status::Stopped(Some(record))
    );
    assert!(!Path::new(&format!("/proc/{}", c.init_pid)).exists());
    wait_until("the monitor to exit", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{monitor_pid}")).exists()
    });
    assert_no_leftovers(c.dir.path(), &c.cgroup);
    let req = ExecRequest {
        command: vec!["true".into()],
        env: BTreeMap::new(),
        cwd: None,
        uid: 0,
        gid: 0,
        pty: Some(WindowSize { cols: 80, rows: 24 }),
    };
    let err = hutch_runtime::exec(&helper_bin(), &c.rd, &req, ExecStdio::Pty).unwrap_err();
    assert!(matches!(err, RuntimeError::NotRunning { .. }), "{err}");
}

#[test]
fn forced_stop_kills_at_once() {
    if !require_root("forced_stop_kills_at_once") {
        return;
    }
    let c = boot();
    let record = container::stop(&c.rd, Duration::from_secs(60), true).unwrap();
    assert_eq!(record.signal, Some(9));
    assert_no_leftovers(c.dir.path(), &c.cgroup);
}

#[test]
fn console_output_is_logged_and_attachable() {
    if !require_root("console_output_is_logged_and_attachable") {
        return;
    }
    let c = boot();
    let mut console = hutch_runtime::MonitorClient::connect(&c.rd)
        .unwrap()
        .attach_console()
        .unwrap();
    console
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        exec(&c, &["sh", "-c", "echo hello-console > /dev/console"]).code,
        0
    );
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("hello-console") {
        let n = console.read(&mut buf).expect("console output");
        assert!(n > 0, "console closed");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    wait_until("the console log", Duration::from_secs(5), || {
        String::from_utf8_lossy(&container::console_log(&c.rd).unwrap()).contains("hello-console")
    });
}

#[test]
fn an_init_that_prints_and_exits_leaves_all_it_printed_in_the_log() {
    if !require_root("an_init_that_prints_and_exits_leaves_all_it_printed_in_the_log") {
        return;
    }
    // Whatever the pty still held when init exited reaches the log before the stop is
    // recorded (an application container that printed and exited lost its last lines):
    // for an init that ends before the monitor's console reader first ran, and for one
    // that prints more than one read takes.
    let scripts = [
        "echo last-words; exit 3",
        "for i in $(seq 400); do echo console-line-$i; done; echo last-words; exit 3",
    ];
    for round in 0..6 {
        let (dir, mut spec, _guard) = prepare(false);
        let script = scripts[round % scripts.len()];
        spec.init = vec!["/bin/sh".into(), "-c".into(), script.into()];
        let rd = dir.path().join("run");
        hutch_runtime::start(&helper_bin(), &rd, &spec).expect("start container");
        wait_until("init to exit", Duration::from_secs(20), || {
            matches!(container::status(&rd), Ok(Status::Stopped(Some(_))))
        });
        let log = String::from_utf8_lossy(&container::console_log(&rd).unwrap()).into_owned();
        assert!(
            log.contains("last-words") && (round % 2 == 0 || log.contains("console-line-400")),
            "round {round}: the log ends {:?}",
            log.lines().rev().take(3).collect::<Vec<_>>()
        );
        assert_no_leftovers(dir.path(), &spec.cgroup);
    }
}

#[test]
fn privileged_containers_run_without_a_user_namespace() {
    if !require_root("privileged_containers_run_without_a_user_namespace") {
        return;
    }
    let (dir, spec, guard) = prepare(true);
    let c = boot_spec(dir, spec, guard);
    assert_eq!(
        fs::read_link(format!("/proc/{}/ns/user", c.init_pid)).unwrap(),
        fs::read_link("/proc/self/ns/user").unwrap()
    );
    assert_eq!(exec(&c, &["cat", "/proc/1/comm"]).stdout.trim(), "init");
    // /proc/sys is read-only without a user namespace to scope it.
    assert_ne!(
        exec(&c, &["sh", "-c", "echo 1 > /proc/sys/kernel/sysrq"]).code,
        0
    );
}

#[test]
fn failed_starts_say_why_and_leave_nothing() {
    if !require_root("failed_starts_say_why_and_leave_nothing") {
        return;
    }
    // No such root filesystem.
    let (dir, mut spec, _guard) = prepare(false);
    spec.rootfs = dir.path().join("missing");
    let rd = dir.path().join("run1");
    let err = hutch_runtime::start(&helper_bin(), &rd, &spec).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert_no_leftovers(dir.path(), &spec.cgroup);

    // A root filesystem without init.
    let (dir, spec, _guard) = prepare(false);
    fs::remove_file(spec.rootfs.join("sbin/init")).unwrap();
    let rd = dir.path().join("run2");
    let err = hutch_runtime::start(&helper_bin(), &rd, &spec).unwrap_err();
    assert!(matches!(err, RuntimeError::StartFailed { .. }), "{err}");
    assert!(err.to_string().contains("/sbin/init"), "{err}");
    assert!(matches!(
        container::status(&rd).unwrap(),
        Status::Stopped(_)
    ));
    assert_no_leftovers(dir.path(), &spec.cgroup);

    // An invalid spec is refused before anything is made.
    let (dir, mut spec, _guard) = prepare(false);
    spec.name = "bad name".into();
    let err = hutch_runtime::start(&helper_bin(), &dir.path().join("run3"), &spec).unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidSpec { .. }), "{err}");
    assert!(!dir.path().join("run3").exists());

    // A failing pre-start hook aborts the start and cleans up.
    let (dir, mut spec, _guard) = prepare(false);
    spec.pre_start_hooks = vec![vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo no-network >&2; exit 1".into(),
    ]];
    let err = hutch_runtime::start(&helper_bin(), &dir.path().join("run4"), &spec).unwrap_err();
    assert!(err.to_string().contains("no-network"), "{err}");
    assert_no_leftovers(dir.path(), &spec.cgroup);
}

#[test]
fn starting_twice_is_refused_and_hooks_see_the_netns() {
    if !require_root("starting_twice_is_refused_and_hooks_see_the_netns") {
        return;
    }
    let (dir, mut spec, guard) = prepare(false);
    let marker = dir.path().join("hook-saw");
    spec.pre_start_hooks = vec![vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("readlink $HUTCH_NETNS > {}", marker.display()),
    ]];
    let c = boot_spec(dir, spec.clone(), guard);
    let err = hutch_runtime::start(&helper_bin(), &c.rd, &spec).unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyRunning { .. }), "{err}");
    let saw = fs::read_to_string(&marker).unwrap();
    assert_eq!(
        saw.trim(),
        fs::read_link(format!("/proc/{}/ns/net", c.init_pid))
            .unwrap()
            .to_string_lossy()
    );
}
