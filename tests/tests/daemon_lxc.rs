//! End-to-end: a real hutchd driven by LXD's own `lxc` client (Debian's lxd-client) and by
//! raw HTTP on its unix socket. Needs root; each test has its own daemon and cleans up.

use std::fs;
use std::path::Path;

use hutch_tests::{assert_no_leftovers, require_root, TestDaemon, Via};

/// A daemon with the busybox image imported under alias `bb`.
fn daemon_with_image() -> TestDaemon {
    with_busybox(TestDaemon::start())
}

/// `d` with the busybox image imported under alias `bb`.
fn with_busybox(d: TestDaemon) -> TestDaemon {
    d.import_busybox(Via::Lxc);
    d
}

fn status_of(d: &TestDaemon, name: &str) -> String {
    d.lxc_ok(&["list", name, "--format", "csv", "-c", "s"])
        .trim()
        .to_string()
}

#[test]
fn lxc_launches_execs_and_manages_a_container() {
    if !require_root("lxc_launches_execs_and_manages_a_container") {
        return;
    }
    let d = daemon_with_image();
    d.lxc_ok(&["launch", "bb", "c1"]);
    assert_eq!(status_of(&d, "c1"), "RUNNING");
    assert_eq!(
        d.lxc_ok(&["exec", "c1", "--", "cat", "/proc/1/comm"])
            .trim(),
        "init"
    );

    // Exit codes, stdin, and stdout/stderr kept apart.
    let out = d.lxc_with_stdin(
        &["exec", "c1", "--", "sh", "-c", "cat; echo err >&2; exit 3"],
        b"from-stdin",
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-stdin");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(
        d.lxc(&["exec", "c1", "--", "no-such-command"])
            .status
            .code(),
        Some(127)
    );

    // Live limits, read back from the host.
    d.lxc_ok(&["config", "set", "c1", "limits.memory", "64MiB"]);
    assert_eq!(
        d.lxc_ok(&["config", "get", "c1", "limits.memory"]).trim(),
        "64MiB"
    );
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(hutch_tests::daemon::cgroup_prefix(d.path()))
        .join("c1/memory.limit_in_bytes");
    let v2 = Path::new("/sys/fs/cgroup")
        .join(hutch_tests::daemon::cgroup_prefix(d.path()))
        .join("c1/memory.max");
    let limit = fs::read_to_string(&v1)
        .or_else(|_| fs::read_to_string(&v2))
        .expect("memory limit file");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let bad = d.lxc(&["config", "set", "c1", "bogus.key", "1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bogus.key"));

    // Pause and resume, stop and start, then delete.
    d.lxc_ok(&["pause", "c1"]);
    assert_eq!(status_of(&d, "c1"), "FROZEN");
    d.lxc_ok(&["start", "c1"]);
    assert_eq!(status_of(&d, "c1"), "RUNNING");
    d.lxc_ok(&["stop", "c1", "--force"]);
    assert_eq!(status_of(&d, "c1"), "STOPPED");
    d.lxc_ok(&["start", "c1"]);
    d.lxc_ok(&["restart", "c1", "--force"]);
    assert_eq!(status_of(&d, "c1"), "RUNNING");
    let refused = d.lxc(&["delete", "c1"]);
    assert!(!refused.status.success(), "a running instance was deleted");
    d.lxc_ok(&["delete", "c1", "--force"]);
    assert_eq!(d.lxc_ok(&["list", "--format", "csv"]).trim(), "");
    assert!(!d
        .path()
        .join("storage-pools/default/containers/c1")
        .exists());
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    assert_no_leftovers(
        &d.path().join("storage-pools/default/containers"),
        &format!("{prefix}/c1"),
    );
}

/// The memory limit the host's cgroup gives instance `name` of `d`.
fn memory_limit(d: &TestDaemon, name: &str) -> String {
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(&prefix)
        .join(name)
        .join("memory.limit_in_bytes");
    let v2 = Path::new("/sys/fs/cgroup")
        .join(&prefix)
        .join(name)
        .join("memory.max");
    fs::read_to_string(&v1)
        .or_else(|_| fs::read_to_string(&v2))
        .expect("memory limit file")
        .trim()
        .to_string()
}

#[test]
fn a_profile_change_reaches_the_running_instances_that_use_it() {
    if !require_root("a_profile_change_reaches_the_running_instances_that_use_it") {
        return;
    }
    let d = daemon_with_image();
    d.lxc_ok(&["profile", "create", "small"]);
    d.lxc_ok(&["launch", "bb", "c1", "-p", "default", "-p", "small"]);
    d.lxc_ok(&["profile", "set", "small", "limits.memory", "96MiB"]);
    assert_eq!(memory_limit(&d, "c1"), (96u64 << 20).to_string());
    // A change no instance can take is refused whole, and the profile stays as it was.
    let bad = d.lxc(&[
        "profile",
        "device",
        "add",
        "small",
        "root",
        "disk",
        "path=/",
        "pool=nowhere",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("nowhere"), "{err}");
    assert!(!d.lxc_ok(&["profile", "show", "small"]).contains("nowhere"));
    // The instance's own key wins over the profile's.
    d.lxc_ok(&["config", "set", "c1", "limits.memory", "80MiB"]);
    d.lxc_ok(&["profile", "set", "small", "limits.memory", "112MiB"]);
    assert_eq!(memory_limit(&d, "c1"), (80u64 << 20).to_string());
    d.lxc_ok(&["config", "unset", "c1", "limits.memory"]);
    assert_eq!(memory_limit(&d, "c1"), (112u64 << 20).to_string());
    // Renamed, the profile still applies.
    d.lxc_ok(&["profile", "rename", "small", "tiny"]);
    d.lxc_ok(&["profile", "set", "tiny", "limits.memory", "128MiB"]);
    assert_eq!(memory_limit(&d, "c1"), (128u64 << 20).to_string());
    assert!(d.lxc_ok(&["config", "show", "c1"]).contains("- tiny"));
    d.lxc_ok(&["delete", "c1", "--force"]);
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    assert_no_leftovers(
        &d.path().join("storage-pools/default/containers"),
        &format!("{prefix}/c1"),
    );
}

#[test]
fn containers_survive_a_killed_daemon() {
    if !require_root("containers_survive_a_killed_daemon") {
        return;
    }
    let mut d = daemon_with_image();
    d.lxc_ok(&["launch", "bb", "c1"]);
    d.kill();
    // What a crash could leave: a volume no row owns, a half-unpacked image, an upload.
    let orphan = d
        .path()
        .join("storage-pools/default/containers/orphan/rootfs");
    fs::create_dir_all(&orphan).unwrap();
    let unpacking = d.path().join("storage-pools/default/images/.abc.unpacking");
    fs::create_dir_all(&unpacking).unwrap();
    let upload = d.path().join("images/.upload-1234");
    fs::write(&upload, b"partial").unwrap();
    d.spawn();
    for debris in [&orphan, &unpacking, &upload] {
        assert!(
            !debris.exists(),
            "startup left crash debris: {}",
            debris.display()
        );
    }
    assert_eq!(status_of(&d, "c1"), "RUNNING");
    assert_eq!(
        d.lxc_ok(&["exec", "c1", "--", "cat", "/proc/1/comm"])
            .trim(),
        "init"
    );
    d.lxc_ok(&["delete", "c1", "--force"]);
}

/// A pid (`init_pid`, `monitor_pid`) that running container `name` published.
fn published_pid(d: &TestDaemon, name: &str, field: &str) -> i32 {
    let state = fs::read_to_string(d.path().join(format!("containers/{name}/state.json")))
        .expect("state.json of a running container");
    serde_json::from_str::<serde_json::Value>(&state).unwrap()[field]
        .as_i64()
        .unwrap() as i32
}

fn monitor_pid(d: &TestDaemon, name: &str) -> i32 {
    published_pid(d, name, "monitor_pid")
}

fn kill_monitor(d: &TestDaemon, name: &str) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor_pid(d, name)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_container_whose_monitor_was_killed_still_stops_and_goes() {
    if !require_root("a_container_whose_monitor_was_killed_still_stops_and_goes") {
        return;
    }
    let d = daemon_with_image();
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    d.lxc_ok(&["launch", "bb", "c1"]);
    kill_monitor(&d, "c1");
    // Its init runs on, reparented: the container is running, and works.
    assert_eq!(status_of(&d, "c1"), "RUNNING");
    assert_eq!(d.lxc_ok(&["exec", "c1", "--", "echo", "hi"]).trim(), "hi");
    // A clean stop halts it through its cgroup, as the monitor would have.
    d.lxc_ok(&["stop", "c1"]);
    assert_eq!(status_of(&d, "c1"), "STOPPED");
    assert!(!d.path().join("containers/c1/state.json").exists());
    d.lxc_ok(&["start", "c1"]);
    assert_eq!(status_of(&d, "c1"), "RUNNING");
    kill_monitor(&d, "c1");
    d.lxc_ok(&["delete", "--force", "c1"]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

/// On a unified-only host (here: a daemon whose /sys/fs/cgroup is the cgroup2 hierarchy
/// alone), init and exec'd commands are born in the container's cgroup by clone3
/// (CLONE_INTO_CGROUP) instead of moving in.
#[test]
fn a_unified_only_host_runs_containers_in_their_cgroup2() {
    if !require_root("a_unified_only_host_runs_containers_in_their_cgroup2") {
        return;
    }
    let d = with_busybox(TestDaemon::start_cgroup2_only());
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    d.lxc_ok(&["launch", "bb", "c1"]);
    let init = published_pid(&d, "c1", "init_pid");
    let host_view = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    assert!(
        host_view.lines().any(|l| l == format!("0::/{prefix}/c1")),
        "{host_view}"
    );
    // Inside, an exec'd command is at the root of the container's cgroup namespace.
    let inside = d.lxc_ok(&["exec", "c1", "--", "cat", "/proc/self/cgroup"]);
    assert!(inside.lines().any(|l| l == "0::/"), "{inside}");
    assert_eq!(d.lxc_ok(&["exec", "c1", "--", "echo", "hi"]).trim(), "hi");
    d.lxc_ok(&["stop", "--force", "c1"]);
    d.lxc_ok(&["start", "c1"]);
    d.lxc_ok(&["delete", "--force", "c1"]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

#[test]
fn lxc_publishes_instances_and_snapshots_as_images() {
    if !require_root("lxc_publishes_instances_and_snapshots_as_images") {
        return;
    }
    let d = daemon_with_image();
    d.lxc_ok(&["launch", "bb", "c1"]);
    d.lxc_ok(&["exec", "c1", "--", "sh", "-c", "echo v1 > /root/mark"]);
    d.lxc_ok(&["snapshot", "c1", "s1"]);
    d.lxc_ok(&["exec", "c1", "--", "sh", "-c", "echo v2 > /root/mark"]);
    // Running: the client asks for --force, and the API refuses on its own too.
    let running = d.lxc(&["publish", "c1", "--alias", "nope"]);
    assert!(!running.status.success(), "{running:?}");
    let (code, body) = d.http(
        "POST",
        "/1.0/images",
        br#"{"source":{"type":"instance","name":"c1"}}"#,
    );
    assert_eq!(code, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let wait = format!("{}/wait", op["operation"].as_str().unwrap());
    let (_, waited) = d.http("GET", &wait, b"");
    assert!(waited.contains("currently running"), "{waited}");

    // --force stops it, publishes, and starts it again.
    let out = d.lxc_ok(&[
        "publish",
        "c1",
        "--force",
        "--alias",
        "mine",
        "flavour=custom",
    ]);
    assert!(out.contains("Instance published with fingerprint"), "{out}");
    assert_eq!(status_of(&d, "c1"), "RUNNING");
    let info = d.lxc_ok(&["image", "show", "mine"]);
    assert!(info.contains("flavour: custom"), "{info}");
    d.lxc_ok(&["launch", "mine", "c2"]);
    assert_eq!(d.lxc_ok(&["exec", "c2", "--", "cat", "/root/mark"]), "v2\n");
    assert_eq!(
        d.lxc_ok(&["exec", "c2", "--", "cat", "/proc/1/comm"])
            .trim(),
        "init"
    );

    // A snapshot publishes while its instance runs; the image keeps the first image's
    // properties; an uncompressed image is asked for.
    let out = d.lxc_ok(&[
        "publish",
        "c1/s1",
        "--alias",
        "old",
        "--compression",
        "none",
    ]);
    assert!(out.contains("Instance published with fingerprint"), "{out}");
    let info = d.lxc_ok(&["image", "show", "old"]);
    assert!(info.contains("os: busybox"), "{info}");
    d.lxc_ok(&["launch", "old", "c3"]);
    assert_eq!(d.lxc_ok(&["exec", "c3", "--", "cat", "/root/mark"]), "v1\n");

    // As with LXD, publishing again under an alias moves the alias to the new image.
    let aliases = |d: &TestDaemon| d.lxc_ok(&["image", "alias", "list", "--format", "csv"]);
    let before = aliases(&d);
    d.lxc_ok(&["publish", "c1/s1", "--alias", "old"]);
    assert_ne!(aliases(&d), before);

    // Refusals leave nothing: an alias in use (asked of the API, which makes aliases
    // itself), a missing snapshot, a bad compression.
    let images_before = d.lxc_ok(&["image", "list", "--format", "csv"]);
    let (_, body) = d.http(
        "POST",
        "/1.0/images",
        br#"{"source":{"type":"snapshot","name":"c1/s1"},"aliases":[{"name":"old"}]}"#,
    );
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let wait = format!("{}/wait", op["operation"].as_str().unwrap());
    let (_, waited) = d.http("GET", &wait, b"");
    assert!(waited.contains("Alias already exists"), "{waited}");
    assert!(!d.lxc(&["publish", "c1/nope"]).status.success());
    assert!(!d
        .lxc(&["publish", "c1/s1", "--compression", "lzip"])
        .status
        .success());
    assert_eq!(
        d.lxc_ok(&["image", "list", "--format", "csv"]),
        images_before
    );
    let leftovers: Vec<_> = fs::read_dir(d.path().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    d.lxc_ok(&["delete", "--force", "c1", "c2", "c3"]);
}

#[test]
fn server_resources_and_trust_answer_lxc() {
    if !require_root("server_resources_and_trust_answer_lxc") {
        return;
    }
    let d = TestDaemon::start();
    let res = d.lxc_ok(&["info", "--resources"]);
    let cpus = fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert!(res.contains("CPU") && res.contains("Memory:"), "{res}");
    assert_eq!(res.matches("online: true").count(), cpus, "{res}");
    d.lxc_ok(&["config", "trust", "list"]);
    d.lxc_ok(&["warning", "list"]);
}

#[test]
fn bad_requests_get_lxd_errors_and_change_nothing() {
    if !require_root("bad_requests_get_lxd_errors_and_change_nothing") {
        return;
    }
    let d = daemon_with_image();
    let (code, body) = d.http("GET", "/1.0/instances/nope", b"");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("\"error\":\"Instance not found\""), "{body}");
    assert!(body.contains("\"type\":\"error\""), "{body}");

    let (code, body) = d.http("POST", "/1.0/instances", b"{not json");
    assert_eq!(code, 400, "{body}");
    let (code, body) = d.http(
        "POST",
        "/1.0/instances",
        br#"{"name":"bad_name!","source":{"type":"image","alias":"bb"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = d.http("POST", "/1.0/instances", br#"{"name":"c2","config":{"limits.memory":"lots"},"source":{"type":"image","alias":"bb"}}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("limits.memory"), "{body}");
    let (code, body) = d.http(
        "POST",
        "/1.0/instances",
        br#"{"name":"c2","source":{"type":"image","alias":"no-such-image"}}"#,
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        d.lxc_ok(&["list", "--format", "csv"]).trim(),
        "",
        "a failed create left an instance"
    );

    d.lxc_ok(&["init", "bb", "c3"]);
    let (code, body) = d.http(
        "POST",
        "/1.0/instances",
        br#"{"name":"c3","source":{"type":"image","alias":"bb"}}"#,
    );
    assert_eq!(code, 409, "{body}");
    let (code, _) = d.http("PUT", "/1.0/instances/c3/state", br#"{"action":"dance"}"#);
    assert_eq!(code, 400);
    let (code, _) = d.http("GET", "/1.0/no-such-endpoint", b"");
    assert_eq!(code, 404);

    // A corrupt image is refused and leaves neither a row nor files.
    let junk = d.path().join("junk.tar.gz");
    fs::write(&junk, b"\x1f\x8bthis is not a tarball").unwrap();
    let before = d.lxc_ok(&["image", "list", "--format", "csv"]);
    let out = d.lxc(&["image", "import", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(d.lxc_ok(&["image", "list", "--format", "csv"]), before);
    let leftovers: Vec<_> = fs::read_dir(d.path().join("storage-pools/default/images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let uploads: Vec<_> = fs::read_dir(d.path().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
        .collect();
    assert!(uploads.is_empty(), "{uploads:?}");
}

#[test]
fn profiles_and_images_are_managed_with_lxc() {
    if !require_root("profiles_and_images_are_managed_with_lxc") {
        return;
    }
    let d = daemon_with_image();
    d.lxc_ok(&["profile", "create", "small"]);
    d.lxc_ok(&["profile", "set", "small", "limits.processes", "100"]);
    assert_eq!(
        d.lxc_ok(&["profile", "get", "small", "limits.processes"])
            .trim(),
        "100"
    );
    d.lxc_ok(&["launch", "bb", "c1", "-p", "default", "-p", "small"]);
    let pids_max = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .find_map(|base| {
            fs::read_to_string(
                Path::new(base)
                    .join(hutch_tests::daemon::cgroup_prefix(d.path()))
                    .join("c1/pids.max"),
            )
            .ok()
        })
        .expect("pids.max");
    assert_eq!(pids_max.trim(), "100");
    assert!(
        !d.lxc(&["profile", "delete", "small"]).status.success(),
        "a profile in use was deleted"
    );
    d.lxc_ok(&["delete", "c1", "--force"]);
    d.lxc_ok(&["profile", "delete", "small"]);
    let images = d.lxc_ok(&["image", "list", "--format", "csv"]);
    assert!(images.contains("bb"), "{images}");
    d.lxc_ok(&["image", "delete", "bb"]);
    assert_eq!(d.lxc_ok(&["image", "list", "--format", "csv"]).trim(), "");
}

#[test]
fn files_round_trip_with_owner_and_mode() {
    if !require_root("files_round_trip_with_owner_and_mode") {
        return;
    }
    let d = daemon_with_image();
    d.lxc_ok(&["launch", "bb", "c1"]);
    let local = d.path().join("payload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&local, &data).unwrap();
    d.lxc_ok(&[
        "file",
        "push",
        local.to_str().unwrap(),
        "c1/root/payload.bin",
        "--uid",
        "1000",
        "--gid",
        "1001",
        "--mode",
        "0640",
    ]);
    assert_eq!(
        d.lxc_ok(&[
            "exec",
            "c1",
            "--",
            "stat",
            "-c",
            "%u %g %a %s",
            "/root/payload.bin"
        ])
        .trim(),
        "1000 1001 640 300000"
    );
    let back = d.path().join("back.bin");
    d.lxc_ok(&[
        "file",
        "pull",
        "c1/root/payload.bin",
        back.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&back).unwrap(), data);
    // Seen from the host, the owner is in the container's id range.
    let (code, body) = d.http("GET", "/1.0/instances/c1/files?path=/root", b"");
    assert_eq!(code, 200);
    assert!(body.contains("payload.bin"), "{body}");
    d.lxc_ok(&["file", "delete", "c1/root/payload.bin"]);
    assert!(!d
        .lxc(&[
            "file",
            "pull",
            "c1/root/payload.bin",
            back.to_str().unwrap()
        ])
        .status
        .success());
    let (code, _) = d.http("GET", "/1.0/instances/c1/files", b"");
    assert_eq!(code, 400, "a missing path is a 400");
    // Symlinks cannot lead out of the container.
    d.lxc_ok(&["exec", "c1", "--", "ln", "-s", "/", "/root/escape"]);
    let (code, body) = d.http(
        "GET",
        "/1.0/instances/c1/files?path=/root/escape/etc/hostname",
        b"",
    );
    assert_ne!(
        body,
        fs::read_to_string("/etc/hostname").unwrap_or_default(),
        "read a host file (status {code})"
    );
    d.lxc_ok(&["delete", "c1", "--force"]);
}

#[test]
fn autostart_and_last_state_after_a_host_restart() {
    if !require_root("autostart_and_last_state_after_a_host_restart") {
        return;
    }
    let mut d = daemon_with_image();
    d.lxc_ok(&["launch", "bb", "auto", "-c", "boot.autostart=true"]);
    d.lxc_ok(&["launch", "bb", "was-running"]);
    d.lxc_ok(&["init", "bb", "stopped"]);
    d.lxc_ok(&["launch", "bb", "never", "-c", "boot.autostart=false"]);
    // A host restart: the daemon dies and every container with it.
    d.kill();
    for name in ["auto", "was-running", "never"] {
        hutch_runtime::container::stop(
            &d.path().join("containers").join(name),
            std::time::Duration::from_secs(1),
            true,
        )
        .unwrap();
    }
    d.spawn();
    hutch_tests::wait_until("autostart", std::time::Duration::from_secs(20), || {
        status_of(&d, "auto") == "RUNNING" && status_of(&d, "was-running") == "RUNNING"
    });
    assert_eq!(status_of(&d, "stopped"), "STOPPED");
    assert_eq!(status_of(&d, "never"), "STOPPED");
    for name in ["auto", "was-running"] {
        d.lxc_ok(&["delete", name, "--force"]);
    }
}

#[test]
fn split_images_import_and_launch() {
    if !require_root("split_images_import_and_launch") {
        return;
    }
    use std::process::Command;
    let d = TestDaemon::start();
    let work = d.path().join("split");
    fs::create_dir_all(&work).unwrap();
    hutch_tests::busybox_rootfs(&work.join("rootfs")).unwrap();
    // Incompressible bulk, so the upload is larger than a form body may be by default.
    let mut blob = vec![0u8; 4 << 20];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut blob).unwrap();
    fs::write(work.join("rootfs/root/blob"), &blob).unwrap();
    fs::write(work.join("metadata.yaml"), "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  description: split busybox\n").unwrap();
    let meta = work.join("meta.tar.xz");
    let root = work.join("rootfs.tar.gz");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cJf")
        .arg(&meta)
        .arg("metadata.yaml")
        .status()
        .unwrap()
        .success());
    assert!(Command::new("tar")
        .arg("-C")
        .arg(work.join("rootfs"))
        .arg("-czf")
        .arg(&root)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let out = d.lxc_ok(&[
        "image",
        "import",
        meta.to_str().unwrap(),
        root.to_str().unwrap(),
        "--alias",
        "split",
    ]);
    // The fingerprint of a split image is sha256(metadata || rootfs).
    let mut both = fs::read(&meta).unwrap();
    both.extend(fs::read(&root).unwrap());
    let sum = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut sum = sum;
    std::io::Write::write_all(sum.stdin.as_mut().unwrap(), &both).unwrap();
    drop(sum.stdin.take());
    let expected = String::from_utf8(sum.wait_with_output().unwrap().stdout).unwrap();
    let expected = expected.split_whitespace().next().unwrap();
    assert!(out.contains(expected), "{out} vs {expected}");
    d.lxc_ok(&["launch", "split", "s1"]);
    assert_eq!(
        d.lxc_ok(&["exec", "s1", "--", "cat", "/proc/1/comm"])
            .trim(),
        "init"
    );
    d.lxc_ok(&["delete", "s1", "--force"]);
    d.lxc_ok(&["image", "delete", "split"]);
    let left: Vec<_> = fs::read_dir(d.path().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn etags_recorded_output_and_logs() {
    if !require_root("etags_recorded_output_and_logs") {
        return;
    }
    let d = daemon_with_image();
    d.lxc_ok(&["launch", "bb", "c1"]);
    // A write with a stale ETag is refused with 412 and changes nothing.
    let (code, body) = d.http_with(
        "PUT",
        "/1.0/instances/c1",
        &[("If-Match", "\"stale\"")],
        br#"{"config":{"user.x":"1"},"devices":{},"profiles":["default"]}"#,
    );
    assert_eq!(code, 412, "{body}");
    assert_eq!(d.lxc_ok(&["config", "get", "c1", "user.x"]).trim(), "");
    // Exec without websockets, with its output recorded in the instance's logs.
    let (code, body) = d.http("POST", "/1.0/instances/c1/exec", br#"{"command":["sh","-c","echo recorded; echo oops >&2; exit 2"],"wait-for-websocket":false,"record-output":true}"#);
    assert_eq!(code, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (_, waited) = d.http(
        "GET",
        &format!("{}/wait?timeout=10", op["operation"].as_str().unwrap()),
        b"",
    );
    let waited: serde_json::Value = serde_json::from_str(&waited).unwrap();
    assert_eq!(waited["metadata"]["metadata"]["return"], 2, "{waited}");
    let stdout_url = waited["metadata"]["metadata"]["output"]["1"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out) = d.http("GET", &stdout_url, b"");
    assert_eq!((code, out.as_str()), (200, "recorded\n"));
    let (_, list) = d.http("GET", "/1.0/instances/c1/logs", b"");
    assert!(list.contains("lxc.log") && list.contains("exec_"), "{list}");
    let (code, _) = d.http(
        "GET",
        "/1.0/instances/c1/logs/..%2F..%2Fdatabase%2Flocal.db",
        b"",
    );
    // A name in the URL that decodes to a path is refused before any handler sees it.
    assert_eq!(code, 400);
    d.lxc_ok(&["delete", "c1", "--force"]);
    assert!(!d.path().join("logs/c1").exists());
}

#[test]
fn events_reach_lxc_monitor() {
    if !require_root("events_reach_lxc_monitor") {
        return;
    }
    use std::process::{Command, Stdio};
    let d = TestDaemon::start();
    let mut monitor = Command::new("lxc")
        .args([
            "monitor",
            "--type=logging",
            "--type=lifecycle",
            "--type=operation",
        ])
        .env("LXD_DIR", d.path())
        .env("LXD_CONF", d.path().join("lxc-conf"))
        .env("HOME", d.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("lxc monitor");
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.lxc_ok(&["profile", "create", "watched"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = monitor.kill();
    let out = monitor.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("action: profile-created"), "{text}");
    assert!(text.contains("type: logging"), "{text}");
}

#[test]
fn lxc_console_attaches_and_detaches() {
    if !require_root("lxc_console_attaches_and_detaches") {
        return;
    }
    let d = daemon_with_image();
    d.lxc_ok(&["launch", "bb", "c1"]);
    let conf = d.path().join("lxc-conf");
    let env = [
        ("LXD_DIR", d.path().as_os_str()),
        ("LXD_CONF", conf.as_os_str()),
        ("HOME", d.path().as_os_str()),
    ];
    let mut term = hutch_tests::TerminalSession::start("lxc console c1", &env);
    term.wait_for("VIA-LXC", |seen| {
        if seen.contains("detach") {
            d.lxc_ok(&[
                "exec",
                "c1",
                "--",
                "sh",
                "-c",
                "echo VIA-LXC > /dev/console",
            ]);
        }
    });
    term.type_keys(&[b"\x01", b"q"]);
    let status = term.wait();
    assert!(status.success(), "lxc console did not detach: {status}");
    d.lxc_ok(&["delete", "c1", "--force"]);
}
