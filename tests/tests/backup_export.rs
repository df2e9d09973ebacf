//! End-to-end: stored instance backups and `lxc export` / `hutch export` against hutchd:
//! the API (create, list, rename, delete, names, expiry), LXD's tarball layout, every
//! compression, optimized btrfs streams that `btrfs receive` takes, an export larger than
//! the pool's free space, a cancelled export, and a backup the real LXD imports.
//! Needs root; every daemon, pool and loop device goes away with its test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hutch_tests::{busybox_image, require_root, wait_until, ReferenceLxd, TestDaemon};
use serde_json::Value;

fn daemon(backend: &str) -> TestDaemon {
    daemon_env(backend, &[])
}

fn daemon_env(backend: &str, env: &[(&str, &str)]) -> TestDaemon {
    let d = TestDaemon::start_with_env(&["--storage-backend", backend], env);
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    d
}

fn json(d: &TestDaemon, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = d.http(method, path, body.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits for an operation answered with 202; its final state.
fn wait_op(d: &TestDaemon, accepted: &Value) -> Value {
    let id = accepted["metadata"]["id"].as_str().expect("an operation");
    json(
        d,
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=60"),
        "",
    )
    .1["metadata"]
        .clone()
}

/// An instance with two snapshots and a file that differs between them.
fn instance_with_snapshots(d: &TestDaemon, name: &str) {
    d.hutch_ok(&["init", "bb", name]);
    d.hutch_ok(&["start", name]);
    d.sh_ok(name, "echo one > /root/data");
    d.hutch_ok(&["snapshot", name, "snap0"]);
    d.sh_ok(name, "echo two > /root/data");
    d.hutch_ok(&["snapshot", name, "snap1"]);
    d.sh_ok(name, "echo three > /root/data");
    d.hutch_ok(&["stop", name, "--force"]);
}

fn tar_list(file: &Path, flag: &str) -> Vec<String> {
    let out = Command::new("tar")
        .arg(flag)
        .arg(file)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar {flag} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

fn tar_cat(file: &Path, flag: &str, member: &str) -> String {
    let out = Command::new("tar")
        .arg(flag)
        .arg(file)
        .arg("-O")
        .arg(member)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar {member}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The layout LXD writes and reads: index first, snapshots, then the instance.
fn check_layout(names: &[String], snapshots: &[&str]) {
    assert_eq!(names[0], "backup/index.yaml", "{names:?}");
    assert!(!names.iter().any(|n| n == "backup"), "no entry for backup/");
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} missing from {names:?}"))
    };
    for s in snapshots {
        assert!(pos(&format!("backup/snapshots/{s}/rootfs/root/data")) < pos("backup/container"));
    }
    pos("backup/container/rootfs/root/data");
    pos("backup/container/backup.yaml");
    pos("backup/container/metadata.yaml");
}

#[test]
fn stored_backups_are_created_listed_renamed_deleted_and_expire() {
    if !require_root("stored_backups_are_created_listed_renamed_deleted_and_expire") {
        return;
    }
    let d = daemon_env("dir", &[("HUTCH_SCHEDULER_INTERVAL_MS", "300")]);
    d.hutch_ok(&["init", "bb", "c1"]);
    let base = "/1.0/instances/c1/backups";
    // Defaults: backup0, never expires.
    let (status, op) = json(&d, "POST", base, "{}");
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        op["metadata"]["resources"]["backups"][0],
        "/1.0/backups/backup0"
    );
    assert_eq!(op["metadata"]["description"], "Backing up instance");
    assert_eq!(wait_op(&d, &op)["status"], "Success");
    let (_, list) = json(&d, "GET", base, "");
    assert_eq!(
        list["metadata"],
        serde_json::json!(["/1.0/instances/c1/backups/backup0"])
    );
    let (_, list) = json(&d, "GET", &format!("{base}?recursion=1"), "");
    let b = &list["metadata"][0];
    assert_eq!(b["name"], "backup0");
    assert_eq!(b["expires_at"], "0001-01-01T00:00:00Z");
    assert_eq!(b["instance_only"], false);
    // The next default name counts up; also under /1.0/containers.
    let (_, op) = json(
        &d,
        "POST",
        "/1.0/containers/c1/backups",
        r#"{"instance_only":true}"#,
    );
    assert_eq!(
        op["metadata"]["resources"]["backups"][0],
        "/1.0/backups/backup1"
    );
    assert_eq!(wait_op(&d, &op)["status"], "Success");
    // Bad names and algorithms are refused before anything starts.
    let (status, _) = json(&d, "POST", base, r#"{"name":"a/b"}"#);
    assert_eq!(status, 400);
    let (status, _) = json(
        &d,
        "POST",
        base,
        r#"{"name":"x","compression_algorithm":"rar"}"#,
    );
    assert_eq!(status, 400);
    // Rename, get, delete.
    let (_, op) = json(&d, "POST", &format!("{base}/backup0"), r#"{"name":"kept"}"#);
    assert_eq!(wait_op(&d, &op)["status"], "Success");
    let (status, one) = json(&d, "GET", &format!("{base}/kept"), "");
    assert_eq!(
        (status, one["metadata"]["name"].as_str()),
        (200, Some("kept"))
    );
    // On dir a backup copies nothing (its export reads the instance's volumes): its
    // directory only.
    let kept = d.path().join("storage-pools/default/backups/c1/kept");
    assert!(kept.is_dir());
    assert!(!kept.join("container").exists());
    let (status, _) = json(&d, "GET", &format!("{base}/backup0"), "");
    assert_eq!(status, 404);
    let (_, op) = json(&d, "DELETE", &format!("{base}/backup1"), "");
    assert_eq!(wait_op(&d, &op)["status"], "Success");
    assert!(!d
        .path()
        .join("storage-pools/default/backups/c1/backup1")
        .exists());
    // A backup whose expiry passed is removed by the scheduler.
    let soon = "2000-01-01T00:00:00Z";
    let (_, op) = json(
        &d,
        "POST",
        base,
        &format!(r#"{{"name":"old","expires_at":"{soon}"}}"#),
    );
    assert_eq!(wait_op(&d, &op)["status"], "Success");
    let old = d.path().join("storage-pools/default/backups/c1/old");
    wait_until("the expired backup to go", Duration::from_secs(30), || {
        json(&d, "GET", &format!("{base}/old"), "").0 == 404 && !old.exists()
    });
    // Renaming the instance moves its backups; deleting it removes them.
    d.hutch_ok(&["move", "c1", "c2"]);
    let (status, _) = json(&d, "GET", "/1.0/instances/c2/backups/kept", "");
    assert_eq!(status, 200);
    assert!(d
        .path()
        .join("storage-pools/default/backups/c2/kept")
        .is_dir());
    d.hutch_ok(&["delete", "c2"]);
    assert!(!d.path().join("storage-pools/default/backups/c2").exists());
}

#[test]
fn lxc_export_writes_lxds_layout_with_snapshots() {
    if !require_root("lxc_export_writes_lxds_layout_with_snapshots") {
        return;
    }
    let d = daemon("dir");
    instance_with_snapshots(&d, "c1");
    let file = d.path().join("c1.tar.gz");
    d.lxc_ok(&["export", "c1", file.to_str().unwrap()]);
    let names = tar_list(&file, "-tzf");
    check_layout(&names, &["snap0", "snap1"]);
    let index = tar_cat(&file, "-xzf", "backup/index.yaml");
    let index: serde_yaml::Value = serde_yaml::from_str(&index).expect("index.yaml parses");
    assert_eq!(index["name"].as_str(), Some("c1"));
    assert_eq!(index["backend"].as_str(), Some("dir"));
    assert_eq!(index["snapshots"][1].as_str(), Some("snap1"));
    assert_eq!(index["config"]["container"]["name"].as_str(), Some("c1"));
    assert_eq!(
        tar_cat(&file, "-xzf", "backup/snapshots/snap0/rootfs/root/data"),
        "one\n"
    );
    assert_eq!(
        tar_cat(&file, "-xzf", "backup/container/rootfs/root/data"),
        "three\n"
    );
    // lxc deleted its stored backup afterwards.
    let (_, list) = json(&d, "GET", "/1.0/instances/c1/backups", "");
    assert_eq!(list["metadata"], serde_json::json!([]));
    assert!(!d.path().join("storage-pools/default/backups/c1").exists());
}

#[test]
fn hutch_export_writes_every_compression() {
    if !require_root("hutch_export_writes_every_compression") {
        return;
    }
    let d = daemon("dir");
    instance_with_snapshots(&d, "c1");
    for (algo, file, list_flag) in [
        ("gzip", "c1.tar.gz", "-tzf"),
        ("none", "c1.tar", "-tf"),
        ("xz", "c1.tar.xz", "-tJf"),
        ("zstd", "c1.tar.zst", "--zstd -tf"),
    ] {
        let path = d.path().join(file);
        d.hutch_ok(&[
            "export",
            "c1",
            path.to_str().unwrap(),
            "--compression",
            algo,
        ]);
        let names = if list_flag.starts_with("--zstd") {
            tar_list_zstd(&path)
        } else {
            tar_list(&path, list_flag)
        };
        check_layout(&names, &["snap0", "snap1"]);
    }
    // Instance only: no snapshots; to stdout.
    let out = d.hutch(&["export", "c1", "-", "--instance-only"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = d.path().join("only.tar.gz");
    std::fs::write(&path, &out.stdout).unwrap();
    let names = tar_list(&path, "-tzf");
    check_layout(&names, &[]);
    assert!(
        !names.iter().any(|n| n.starts_with("backup/snapshots")),
        "{names:?}"
    );
    assert!(d
        .hutch_err(&["export", "c1", "x", "--compression", "rar"])
        .contains("rar"));
    // No algorithm asked: the server's backups.compression_algorithm, live.
    d.hutch_ok(&["config", "set", "backups.compression_algorithm", "xz"]);
    for client in ["hutch", "lxc"] {
        let path = d.path().join(format!("by-server-{client}"));
        if client == "hutch" {
            d.hutch_ok(&["export", "c1", path.to_str().unwrap()]);
        } else {
            d.lxc_ok(&["export", "c1", path.to_str().unwrap()]);
        }
        let magic = std::fs::read(&path).unwrap();
        assert!(
            magic.starts_with(b"\xfd7zXZ"),
            "{client}: not xz: {:?}",
            &magic[..6.min(magic.len())]
        );
        check_layout(&tar_list(&path, "-tJf"), &["snap0", "snap1"]);
    }
    d.hutch_ok(&["config", "unset", "backups.compression_algorithm"]);
}

fn tar_list_zstd(file: &Path) -> Vec<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}' | tar -tf -", file.display()))
        .output()
        .expect("run zstd | tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn optimized_btrfs_exports_are_streams_btrfs_receive_takes() {
    if !require_root("optimized_btrfs_exports_are_streams_btrfs_receive_takes") {
        return;
    }
    let d = daemon("btrfs");
    instance_with_snapshots(&d, "c1");
    let file = d.path().join("c1-opt.tar.gz");
    d.lxc_ok(&[
        "export",
        "c1",
        file.to_str().unwrap(),
        "--optimized-storage",
    ]);
    let names = tar_list(&file, "-tzf");
    assert_eq!(
        names,
        [
            "backup/index.yaml",
            "backup/optimized_header.yaml",
            "backup/snapshots/snap0.bin",
            "backup/snapshots/snap1.bin",
            "backup/container.bin"
        ]
    );
    let index: serde_yaml::Value =
        serde_yaml::from_str(&tar_cat(&file, "-xzf", "backup/index.yaml")).unwrap();
    assert_eq!(index["optimized"].as_bool(), Some(true));
    assert_eq!(index["backend"].as_str(), Some("btrfs"));
    // The streams in order, each incremental on the one before, into the pool's btrfs.
    let into = d.path().join("storage-pools/default/received");
    std::fs::create_dir_all(&into).unwrap();
    let unpack = d.path().join("unpacked");
    std::fs::create_dir_all(&unpack).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&unpack)
        .status()
        .unwrap();
    assert!(st.success());
    let mut received = Vec::new();
    for bin in [
        "snapshots/snap0.bin",
        "snapshots/snap1.bin",
        "container.bin",
    ] {
        let out = Command::new("btrfs")
            .arg("receive")
            .arg("-f")
            .arg(unpack.join("backup").join(bin))
            .arg(&into)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "btrfs receive {bin}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        received.push(bin);
    }
    let subvols: Vec<std::path::PathBuf> = std::fs::read_dir(&into)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(subvols.len(), 3, "{subvols:?}");
    let data: Vec<String> = subvols
        .iter()
        .map(|s| std::fs::read_to_string(s.join("rootfs/root/data")).unwrap_or_default())
        .collect();
    for want in ["one\n", "two\n", "three\n"] {
        assert!(data.iter().any(|d| d == want), "{data:?}");
    }
    for s in &subvols {
        let _ = Command::new("btrfs")
            .args(["subvolume", "delete"])
            .arg(s)
            .output();
    }
}

/// Fills an instance on `pool` with as much incompressible data as fits, exports it
/// uncompressed and checks the tarball is larger than what the pool has free.
fn export_larger_than_free_space(d: &TestDaemon, pool: &str, pool_path: &Path) {
    d.lxc_ok(&["init", "bb", "big", "-s", pool]);
    d.hutch_ok(&["start", "big"]);
    // dd stops with ENOSPC at the end.
    let _ = d.sh(
        "big",
        "dd if=/dev/urandom of=/root/big bs=1M count=150; sync",
    );
    let written = d.sh_ok("big", "wc -c < /root/big");
    let written: u64 = written.trim().parse().expect("a size");
    assert!(written > 80 << 20, "only {written} bytes written");
    d.hutch_ok(&["stop", "big", "--force"]);
    let st = nix::sys::statvfs::statvfs(pool_path).unwrap();
    let free = st.blocks_available() * st.fragment_size();
    assert!(free < written, "the pool still has {free} bytes free");
    let file = d.path().join("big.tar");
    d.hutch_ok(&[
        "export",
        "big",
        file.to_str().unwrap(),
        "--compression",
        "none",
    ]);
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(len > free, "{len} bytes exported, {free} free");
    let names = tar_list(&file, "-tf");
    assert!(names
        .iter()
        .any(|n| n == "backup/container/rootfs/root/big"));
    d.hutch_ok(&["delete", "big"]);
    // Nothing the export made stays on the pool.
    let backups = pool_path.join("backups/big");
    assert!(!backups.exists(), "{} is left", backups.display());
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn an_export_larger_than_the_pools_free_space_streams_through() {
    if !require_root("an_export_larger_than_the_pools_free_space_streams_through") {
        return;
    }
    let d = daemon("dir");
    // btrfs: the backup's copies are snapshots.
    d.lxc_ok(&["storage", "create", "tiny", "btrfs", "size=200MiB"]);
    export_larger_than_free_space(&d, "tiny", &d.path().join("storage-pools/tiny"));
    d.lxc_ok(&["storage", "delete", "tiny"]);
    // dir: no copy at all, the export reads the instance's own volume. Its source is a
    // 200 MiB tmpfs in the daemon's test directory, which unmounts it when it goes.
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200m,mode=0711", "tmpfs"])
        .arg(&small)
        .status()
        .expect("run mount");
    assert!(ok.success(), "mount a tmpfs");
    let source = small.join("pool");
    std::fs::create_dir(&source).unwrap();
    d.lxc_ok(&[
        "storage",
        "create",
        "tinydir",
        "dir",
        &format!("source={}", source.display()),
    ]);
    export_larger_than_free_space(&d, "tinydir", &source);
    d.lxc_ok(&["storage", "delete", "tinydir"]);
}

#[test]
fn a_cancelled_export_stops_and_leaves_nothing() {
    if !require_root("a_cancelled_export_stops_and_leaves_nothing") {
        return;
    }
    let d = daemon("dir");
    d.hutch_ok(&["init", "bb", "c1"]);
    d.hutch_ok(&["start", "c1"]);
    d.sh_ok(
        "c1",
        "dd if=/dev/urandom of=/root/big bs=1M count=64 2>/dev/null",
    );
    d.hutch_ok(&["stop", "c1", "--force"]);
    let (_, op) = json(
        &d,
        "POST",
        "/1.0/instances/c1/backups",
        r#"{"name":"b","compression_algorithm":"none"}"#,
    );
    assert_eq!(wait_op(&d, &op)["status"], "Success");
    // A slow reader: the producer waits on it, so the export is still running.
    let out = d.path().join("partial.tar");
    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", "--limit-rate", "200k", "--unix-socket"])
        .arg(d.socket())
        .arg("http://hutch/1.0/instances/c1/backups/b/export")
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut export = Value::Null;
    wait_until("the export's operation", Duration::from_secs(30), || {
        let (_, ops) = json(&d, "GET", "/1.0/operations?recursion=1", "");
        export = ops["metadata"]["running"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|o| o["description"] == "Exporting backup")
                    .cloned()
            })
            .unwrap_or(Value::Null);
        // Running, and reporting what it read.
        export["metadata"]["progress"]["processed"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
            > 0
    });
    // Progress as LXD's: text, percent of the total, rate and time left.
    let progress = &export["metadata"]["progress"];
    for field in ["percent", "speed", "total", "eta"] {
        assert!(progress[field].is_string(), "{field}: {export}");
    }
    assert!(export["metadata"]["export_progress"]
        .as_str()
        .is_some_and(|t| t.contains("%")));
    assert_eq!(export["may_cancel"], true);
    assert_eq!(export["resources"]["backups"][0], "/1.0/backups/b");
    let id = export["id"].as_str().unwrap();
    let (status, body) = json(&d, "DELETE", &format!("/1.0/operations/{id}"), "");
    assert_eq!(status, 200, "{body}");
    // Read while it is kept (a few seconds after it ends).
    let (_, op) = json(
        &d,
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=30"),
        "",
    );
    assert_eq!(op["metadata"]["status"], "Cancelled", "{op}");
    // The body ends at the cancel, not after what was still queued for the slow reader.
    let done = curl.wait().unwrap();
    assert!(!done.success(), "the client sees the download fail");
    // Nothing left on the server but the stored backup itself; the thread is gone.
    let backups = d.path().join("storage-pools/default/backups/c1");
    let left: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["b"]);
    wait_until("the export thread to end", Duration::from_secs(30), || {
        !threads_of_daemon(&d).iter().any(|t| t == "backup-export")
    });
    // A client that goes away stops the producer too.
    let mut gone = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "100k",
            "--max-time",
            "2",
            "--unix-socket",
        ])
        .arg(d.socket())
        .arg("http://hutch/1.0/instances/c1/backups/b/export")
        .arg("-o")
        .arg("/dev/null")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = gone.wait();
    wait_until("the export thread to end", Duration::from_secs(30), || {
        !threads_of_daemon(&d).iter().any(|t| t == "backup-export")
    });
}

/// The names of the daemon's threads.
fn threads_of_daemon(d: &TestDaemon) -> Vec<String> {
    let Some(pid) = d.pid() else {
        return Vec::new();
    };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lxd_imports_a_backup_hutchd_exported() {
    let test = "lxd_imports_a_backup_hutchd_exported";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = ReferenceLxd::start(test) else {
        return;
    };
    let d = daemon("dir");
    instance_with_snapshots(&d, "c1");
    let file = d.path().join("c1.tar.gz");
    d.lxc_ok(&["export", "c1", file.to_str().unwrap()]);
    lxd.lxc_ok(&["import", file.to_str().unwrap()]);
    let snaps = lxd.lxc_ok(&["query", "/1.0/instances/c1/snapshots"]);
    assert!(
        snaps.contains("snap0") && snaps.contains("snap1"),
        "{snaps}"
    );
    let pulled = lxd.lxc_ok(&["file", "pull", "c1/root/data", "-"]);
    assert_eq!(pulled, "three\n");
}

#[test]
fn lxd_imports_an_optimized_btrfs_backup_hutchd_exported() {
    let test = "lxd_imports_an_optimized_btrfs_backup_hutchd_exported";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = ReferenceLxd::start(test) else {
        return;
    };
    let d = daemon("btrfs");
    instance_with_snapshots(&d, "c1");
    let file = d.path().join("c1-opt.tar.gz");
    d.lxc_ok(&[
        "export",
        "c1",
        file.to_str().unwrap(),
        "--optimized-storage",
    ]);
    lxd.lxc_ok(&["storage", "create", "bt", "btrfs", "size=1GiB"]);
    let import = ["import", file.to_str().unwrap(), "-s", "bt"];
    // LXD 5.0 has hung after the upload under the suite's load (once in seven runs), past
    // the command limit, which panics: that hang is LXD's, so the import is tried again.
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lxd.lxc(&import)));
    if !first.is_ok_and(|out| out.status.success()) {
        eprintln!("{test}: LXD's first import failed or hung; importing again");
        let _ = lxd.lxc(&["delete", "c1", "--force"]);
        lxd.lxc_ok(&import);
    }
    let snaps = lxd.lxc_ok(&["query", "/1.0/instances/c1/snapshots"]);
    assert!(
        snaps.contains("snap0") && snaps.contains("snap1"),
        "{snaps}"
    );
    let pulled = lxd.lxc_ok(&["file", "pull", "c1/root/data", "-"]);
    assert_eq!(pulled, "three\n");
    lxd.lxc_ok(&["delete", "c1"]);
    lxd.lxc_ok(&["storage", "delete", "bt"]);
}

/// hutchd → hutchd: export (plain and optimized), delete, import; files, config and
/// snapshots come back, and the instance starts.
/// What a volume holds, line by line: path, type, mode, owner, and for files their size,
/// modification time and SHA-256, for links their target, for nodes their device. The
/// `backup.yaml` the daemon rewrites at the volume's top is left out (and its temporary).
fn tree_manifest(root: &Path) -> Vec<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            // Rewritten by the daemon just after each change (under a temporary name).
            if rel == "backup.yaml" || rel == ".backup.yaml.tmp" {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let head = format!("{rel} {:o} {}:{}", m.mode(), m.uid(), m.gid());
            if ft.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push(format!("{head} -> {}", target.display()));
            } else if ft.is_dir() {
                out.push(format!("{head} dir"));
                walk(root, &path, out);
            } else if ft.is_file() {
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                out.push(format!("{head} {} {} {digest:x}", m.len(), m.mtime()));
            } else {
                out.push(format!("{head} node {}", m.rdev()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// The instance's trees: its volume and each snapshot's.
fn instance_trees(d: &TestDaemon, name: &str, snapshots: &[&str]) -> Vec<Vec<String>> {
    let pool = d.path().join("storage-pools/default");
    let mut trees = vec![tree_manifest(&pool.join("containers").join(name))];
    for s in snapshots {
        trees.push(tree_manifest(
            &pool.join("containers-snapshots").join(name).join(s),
        ));
    }
    trees
}

/// `lxc config show` without the volatile keys an import may set anew.
fn stable_config(d: &TestDaemon, name: &str) -> Vec<String> {
    d.lxc_ok(&["config", "show", name])
        .lines()
        .filter(|l| !l.trim_start().starts_with("volatile."))
        .map(str::to_string)
        .collect()
}

/// Each snapshot as the API shows it, but for when it was last used.
fn snapshot_objects(d: &TestDaemon, name: &str) -> Vec<Value> {
    let snaps: Value = serde_json::from_str(&d.lxc_ok(&[
        "query",
        &format!("/1.0/instances/{name}/snapshots?recursion=1"),
    ]))
    .unwrap();
    snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let o = s.as_object_mut().unwrap();
            o.remove("last_used_at");
            for key in ["config", "expanded_config"] {
                if let Some(c) = o.get_mut(key).and_then(Value::as_object_mut) {
                    c.retain(|k, _| !k.starts_with("volatile."));
                }
            }
            s
        })
        .collect()
}

#[test]
fn an_exported_instance_imports_back_plain_and_optimized() {
    if !require_root("an_exported_instance_imports_back_plain_and_optimized") {
        return;
    }
    for backend in ["btrfs", "dir"] {
        let d = daemon(backend);
        instance_with_snapshots(&d, "rt");
        d.hutch_ok(&["config", "set", "rt", "user.note", "kept"]);
        d.hutch_ok(&[
            "config",
            "device",
            "add",
            "rt",
            "tmp",
            "disk",
            "source=/tmp",
            "path=/mnt/tmp",
        ]);
        // A tree with what a rootfs has: modes, owners, links, a fifo, a hard link (device
        // nodes cannot be made in an unprivileged container; the import's own tests have
        // them).
        d.hutch_ok(&["start", "rt"]);
        d.sh_ok(
            "rt",
            "mkdir -p /srv/t && cd /srv/t && echo x > f && chown 12:34 f && chmod 4750 f && \
             ln -s /etc/passwd abs && ln -s f rel && ln f hard && mkfifo fifo && chmod 1777 /srv/t",
        );
        d.hutch_ok(&["stop", "rt", "--force"]);
        let before_trees = instance_trees(&d, "rt", &["snap0", "snap1"]);
        let before_config = stable_config(&d, "rt");
        let before_snapshots = snapshot_objects(&d, "rt");
        for (label, extra) in [("plain", None), ("optimized", Some("--optimized-storage"))] {
            let label = format!("{backend}, {label}");
            let file = d.path().join("rt-export.tar.gz");
            let mut args = vec!["export", "rt", file.to_str().unwrap()];
            args.extend(extra);
            d.hutch_ok(&args);
            d.hutch_ok(&["delete", "rt"]);
            d.hutch_ok(&["import", file.to_str().unwrap()]);
            assert_eq!(stable_config(&d, "rt"), before_config, "{label}");
            assert_eq!(snapshot_objects(&d, "rt"), before_snapshots, "{label}");
            let after_trees = instance_trees(&d, "rt", &["snap0", "snap1"]);
            for (before, after) in before_trees.iter().zip(&after_trees) {
                let gone: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
                let new: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
                assert!(
                    gone.is_empty() && new.is_empty(),
                    "{label}: lost {gone:?}, gained {new:?}"
                );
            }
            d.hutch_ok(&["start", "rt"]);
            assert_eq!(d.sh_ok("rt", "cat /root/data").trim(), "three", "{label}");
            d.hutch_ok(&["restore", "rt", "snap0"]);
            assert_eq!(d.sh_ok("rt", "cat /root/data").trim(), "one", "{label}");
            d.hutch_ok(&["stop", "rt", "--force"]);
            // Back to the exported state for the next round: the export again.
            d.hutch_ok(&["delete", "rt"]);
            d.hutch_ok(&["import", file.to_str().unwrap()]);
            std::fs::remove_file(&file).unwrap();
        }
        d.hutch_ok(&["delete", "rt"]);
    }
}
