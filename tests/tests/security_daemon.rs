//! End-to-end attacks on the daemon and its state directory, each a regression test for a
//! defect of issue 11: setuid files reachable by host users, two daemons on one directory,
//! lost updates, racing imports, crashes in the middle of a rename, volumes no record
//! owns, names that climb out of their directory, and misspelt device options.
//! Needs root; each test starts its own daemon and leaves nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hutch_tests::{busybox_image, output_within, require_root, TestDaemon, COMMAND_LIMIT};

fn daemon_with_busybox(init_args: &[&str]) -> TestDaemon {
    let d = TestDaemon::start_with(init_args);
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    d
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Runs `path args` as user nobody, as any ordinary host user could.
fn as_nobody(path: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(path)
        .args(args);
    output_within(&mut cmd, b"", COMMAND_LIMIT)
}

#[test]
fn setuid_files_made_in_a_container_are_out_of_reach_of_host_users() {
    if !require_root("setuid_files_made_in_a_container_are_out_of_reach_of_host_users") {
        return;
    }
    let d = daemon_with_busybox(&["--storage-backend", "btrfs"]);
    d.hutch_ok(&["launch", "bb", "c1"]);
    d.hutch_ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "cp /bin/busybox /root/id && chmod 4755 /root/id",
    ]);
    let pool = d.path().join("storage-pools/default");
    let planted = pool.join("containers/c1/rootfs/root/id");
    assert_eq!(
        mode(&planted) & 0o4000,
        0o4000,
        "the file is setuid on disk"
    );

    // An ordinary host user can neither reach it nor, were it reachable, gain root by it.
    let out = as_nobody(&planted, &["id", "-u"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != "0",
        "a host user ran the container's setuid file: {out:?}"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let pool_line = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(pool.to_str().unwrap()))
        .expect("the btrfs pool is mounted");
    assert!(
        pool_line
            .split_whitespace()
            .nth(5)
            .unwrap()
            .contains("nosuid"),
        "pool mounted without nosuid: {pool_line}"
    );
    // LXD's layout.
    assert_eq!(mode(d.path()), 0o711);
    assert_eq!(mode(&d.path().join("containers")), 0o711);
    assert_eq!(mode(&d.path().join("database")), 0o700);
    assert_eq!(mode(&d.path().join("database/local.db")), 0o600);
    assert_eq!(mode(&d.path().join("images")), 0o700);
    assert_eq!(mode(&d.path().join("disks")), 0o700);
    assert_eq!(mode(&d.path().join("disks/default.img")), 0o600);
    assert_eq!(mode(&pool.join("containers")), 0o711);
    assert_eq!(mode(&pool.join("images")), 0o700);
    assert_eq!(mode(&pool.join("containers/c1")), 0o100);

    // Inside, the container's own view of its root keeps setuid: a non-root user of the
    // container runs the file as the container's root.
    let inside = d.hutch_ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "awk '$5 == \"/\"' /proc/self/mountinfo | tail -n 1",
    ]);
    assert!(
        !inside
            .split_whitespace()
            .nth(5)
            .unwrap_or("")
            .contains("nosuid"),
        "the container's root lost setuid: {inside}"
    );

    // Trees made before are closed at the next start.
    d.hutch_ok(&["stop", "c1", "--force"]);
    let mut d = d;
    d.kill();
    for (p, m) in [
        (d.path().to_path_buf(), 0o755),
        (d.path().join("database/local.db"), 0o644),
        (pool.join("containers/c1"), 0o755),
    ] {
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    }
    d.spawn();
    assert_eq!(mode(d.path()), 0o711);
    assert_eq!(mode(&d.path().join("database/local.db")), 0o600);
    assert_eq!(mode(&pool.join("containers/c1")), 0o100);
    d.hutch_ok(&["start", "c1"]);
    d.hutch_ok(&["exec", "c1", "--", "true"]);
}

#[test]
fn a_second_daemon_on_one_directory_is_refused_and_names_the_first() {
    if !require_root("a_second_daemon_on_one_directory_is_refused_and_names_the_first") {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let first = std::fs::read_to_string(d.path().join("hutchd.lock")).unwrap();
    let mut cmd = Command::new(hutch_tests::hutchd_bin());
    cmd.arg("--dir").arg(d.path());
    let out = output_within(&mut cmd, b"", COMMAND_LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second hutchd started");
    assert!(
        err.contains(&format!("pid {}", first.trim())),
        "the refusal does not name the first daemon: {err}"
    );
    // `hutchd init` does not take the directory either: it goes through the first
    // daemon's API (the pool exists, so nothing changes), and that daemon goes on answering.
    let mut init = Command::new(hutch_tests::hutchd_bin());
    init.arg("--dir")
        .arg(d.path())
        .args(["init", "--auto", "--network-bridge", "none"]);
    let out = output_within(&mut init, b"", COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("created"));
    assert_eq!(
        std::fs::read_to_string(d.path().join("hutchd.lock")).unwrap(),
        first,
        "the first daemon still holds the lock"
    );
    assert_eq!(d.http("GET", "/1.0", b"").0, 200);
}

#[test]
fn parallel_patches_are_all_kept() {
    if !require_root("parallel_patches_are_all_kept") {
        return;
    }
    let d = daemon_with_busybox(&["--storage-backend", "dir"]);
    d.hutch_ok(&["init", "bb", "c1"]);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    let body = format!(r#"{{"config":{{"user.k{i}":"v{i}"}}}}"#);
                    d.http("PATCH", "/1.0/instances/c1", body.as_bytes()).0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (_, body) = d.http("GET", "/1.0/instances/c1", b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let config = v["metadata"]["config"].as_object().unwrap();
    let kept = (0..100)
        .filter(|i| config.get(&format!("user.k{i}")).is_some())
        .count();
    assert_eq!(kept, 100, "updates were lost");
}

#[test]
fn parallel_imports_of_one_tarball_leave_one_whole_image() {
    if !require_root("parallel_imports_of_one_tarball_leave_one_whole_image") {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "btrfs"]);
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    let image = image.to_str().unwrap();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let d = &d;
                s.spawn(move || d.hutch(&["image", "import", image], b""))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "no import succeeded: {outs:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already exists"), "unexpected failure: {err}");
    }
    let (_, body) = d.http("GET", "/1.0/images", b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["metadata"].as_array().unwrap().len(), 1, "{body}");
    let fp = v["metadata"][0]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        d.path().join("images").join(&fp).exists(),
        "image file lost"
    );
    d.hutch_ok(&["launch", &fp, "c1"]);
    d.hutch_ok(&["exec", "c1", "--", "true"]);
    d.hutch_ok(&["stop", "c1", "--force"]);
}

/// A rename killed at `point` is finished by the next start: the instance is found under
/// its new name, whole, and starts.
fn rename_survives_a_crash_at(point: &str) {
    let mut d = daemon_with_busybox(&["--storage-backend", "btrfs"]);
    d.hutch_ok(&["init", "bb", "c1"]);
    d.hutch_ok(&["snapshot", "c1", "s0"]);
    d.kill();
    d.set_env(&[("HUTCH_FAULT", point)]);
    d.spawn();
    let out = d.hutch(&["rename", "c1", "c2"], b"");
    assert!(
        !out.status.success(),
        "the fault point {point} was not reached"
    );
    d.wait_for_exit(Duration::from_secs(30));
    d.set_env(&[]);
    d.spawn();
    let names = d.hutch_ok(&["list", "--format", "csv", "-c", "n"]);
    assert_eq!(names.trim(), "c2", "after a crash at {point}");
    assert!(d.hutch_ok(&["info", "c2"]).contains("s0"));
    d.hutch_ok(&["start", "c2"]);
    d.hutch_ok(&["exec", "c2", "--", "true"]);
    d.hutch_ok(&["stop", "c2", "--force"]);
    let quarantine = d.path().join("storage-pools/default/quarantine");
    assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 0);
}

#[test]
fn a_rename_killed_after_its_record_is_finished_at_start() {
    if !require_root("a_rename_killed_after_its_record_is_finished_at_start") {
        return;
    }
    rename_survives_a_crash_at("rename-recorded");
}

#[test]
fn a_rename_killed_between_its_volume_moves_is_finished_at_start() {
    if !require_root("a_rename_killed_between_its_volume_moves_is_finished_at_start") {
        return;
    }
    rename_survives_a_crash_at("rename-volume-moved");
}

#[test]
fn volumes_no_record_owns_are_quarantined_never_deleted() {
    if !require_root("volumes_no_record_owns_are_quarantined_never_deleted") {
        return;
    }
    let mut d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    // As if the database had been restored from a backup older than this instance.
    let ghost = d.path().join("storage-pools/default/containers/ghost");
    std::fs::create_dir_all(ghost.join("rootfs/root")).unwrap();
    std::fs::write(ghost.join("rootfs/root/precious"), "data").unwrap();
    d.kill();
    d.spawn();
    assert!(
        !ghost.exists(),
        "the stray volume stayed among the instances"
    );
    let quarantine = d.path().join("storage-pools/default/quarantine");
    let aside: Vec<_> = std::fs::read_dir(&quarantine)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(aside[0].join("rootfs/root/precious")).unwrap(),
        "data"
    );
    let log = std::fs::read_to_string(d.path().join("hutchd.log")).unwrap();
    assert!(log.contains("moved aside"), "not logged: {log}");
}

#[test]
fn names_that_climb_out_of_their_directory_are_refused() {
    if !require_root("names_that_climb_out_of_their_directory_are_refused") {
        return;
    }
    let d = daemon_with_busybox(&["--storage-backend", "dir"]);
    d.hutch_ok(&["init", "bb", "c1"]);
    let victim = std::env::temp_dir().join(hutch_tests::unique_name("vict"));
    std::fs::create_dir_all(&victim).unwrap();
    let rel = format!("../../../../../../../..{}", victim.display());
    let body = format!(r#"{{"devices":{{"d":{{"type":"disk","source":"{rel}","path":"/mnt"}}}}}}"#);
    let (status, resp) = d.http("PATCH", "/1.0/instances/c1", body.as_bytes());
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("neither an absolute host path nor a storage volume name"));
    // A name in the URL that decodes to a path.
    for path in [
        "/1.0/storage-pools/default/volumes/custom/..%2F..%2F..%2Ftmp",
        "/1.0/instances/..",
        "/1.0/instances/%2e%2e/snapshots",
    ] {
        let (status, resp) = d.http("GET", path, b"");
        assert_eq!(status, 400, "{path}: {resp}");
    }
    let (status, _) = d.http(
        "POST",
        "/1.0/storage-pools/default/volumes/custom",
        br#"{"name":"..","type":"custom","config":{}}"#,
    );
    assert_eq!(status, 400);
    let _ = std::fs::remove_dir_all(&victim);
}

#[test]
fn misspelt_or_unknown_device_options_are_refused_by_name() {
    if !require_root("misspelt_or_unknown_device_options_are_refused_by_name") {
        return;
    }
    let d = daemon_with_busybox(&["--storage-backend", "dir"]);
    d.hutch_ok(&["init", "bb", "c1"]);
    for (dev, named) in [
        (
            r#"{"type":"disk","source":"/tmp","path":"/mnt","readonly":"ture"}"#,
            "readonly",
        ),
        (
            r#"{"type":"disk","source":"/tmp","path":"/mnt","shift":"maybe"}"#,
            "shift",
        ),
        (
            r#"{"type":"disk","source":"/tmp","path":"/mnt","bogus":"1"}"#,
            "bogus",
        ),
        (
            r#"{"type":"unix-char","path":"/dev/x","mode":"999"}"#,
            "mode",
        ),
        (r#"{"type":"gpu","gputype":"mig"}"#, "gputype"),
        (r#"{"type":"usb"}"#, "usb"),
    ] {
        let body = format!(r#"{{"devices":{{"d":{dev}}}}}"#);
        let (status, resp) = d.http("PATCH", "/1.0/instances/c1", body.as_bytes());
        assert_eq!(status, 400, "{dev} accepted: {resp}");
        assert!(
            resp.contains(named),
            "{dev}: the refusal does not name it: {resp}"
        );
    }
    // Profiles are checked by the same table.
    let (status, resp) = d.http(
        "PATCH",
        "/1.0/profiles/default",
        br#"{"devices":{"d":{"type":"disk","source":"/tmp","path":"/mnt","readonly":"ture"}}}"#,
    );
    assert_eq!(status, 400, "{resp}");
    let (_, body) = d.http("GET", "/1.0/instances/c1", b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["metadata"]["devices"],
        serde_json::json!({}),
        "a refused device was stored"
    );
    let (_, body) = d.http("GET", "/1.0/profiles/default", b"");
    assert!(
        !body.contains("\"d\""),
        "a refused device was stored: {body}"
    );
}

/// The host uid that instance `name`'s init runs as.
fn init_host_uid(d: &TestDaemon, name: &str) -> u32 {
    let (_, body) = d.http("GET", &format!("/1.0/instances/{name}/state"), b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pid = v["metadata"]["pid"].as_i64().expect("a running init");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("Uid line")
}

#[test]
fn isolated_idmaps_are_distinct_and_kept_across_restarts() {
    if !require_root("isolated_idmaps_are_distinct_and_kept_across_restarts") {
        return;
    }
    let d = daemon_with_busybox(&["--storage-backend", "btrfs"]);
    d.hutch_ok(&["launch", "bb", "shared"]);
    for c in ["iso1", "iso2"] {
        d.hutch_ok(&["launch", "bb", c, "-c", "security.idmap.isolated=true"]);
    }
    let (shared, a, b) = (
        init_host_uid(&d, "shared"),
        init_host_uid(&d, "iso1"),
        init_host_uid(&d, "iso2"),
    );
    assert!(shared != a && shared != b && a != b, "{shared} {a} {b}");
    let recorded = d.hutch_ok(&["config", "get", "iso1", "volatile.idmap.base"]);
    assert_eq!(recorded.trim(), a.to_string());
    // The container's root owns its directory, so it alone can reach its root filesystem.
    let dir = d.path().join("storage-pools/default/containers/iso1");
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), a);
    d.hutch_ok(&["exec", "iso1", "--", "sh", "-c", "echo ok > /root/f"]);
    d.hutch_ok(&["restart", "iso1", "--force"]);
    assert_eq!(init_host_uid(&d, "iso1"), a);
    assert_eq!(
        d.hutch_ok(&["exec", "iso1", "--", "cat", "/root/f"]).trim(),
        "ok"
    );
    for c in ["shared", "iso1", "iso2"] {
        d.hutch_ok(&["stop", c, "--force"]);
    }
}

#[test]
fn a_start_survives_init_reporting_before_its_parent() {
    if !require_root("a_start_survives_init_reporting_before_its_parent") {
        return;
    }
    // Under load the process that forks init can be slower to report init's pid than init
    // is to report its mounts (seen in CI-like runs: "expected init pid, got mounted").
    let mut d = daemon_with_busybox(&["--storage-backend", "dir"]);
    d.kill();
    d.set_env(&[("HUTCH_FAULT", "slow-intermediate")]);
    d.spawn();
    d.hutch_ok(&["launch", "bb", "c1"]);
    d.hutch_ok(&["exec", "c1", "--", "true"]);
    d.hutch_ok(&["stop", "c1", "--force"]);
}
