//! End-to-end: every instance and custom volume carries its backup file, kept current on
//! every change, and `hutchd recover` rebuilds the database from the pools after
//! `database/` is deleted: pools (a btrfs loop file and a dir pool), instances with their
//! snapshots, custom volumes, the profiles they use. Conflicts and hostile files are
//! refused by name. Needs root; every pool and mount goes with its test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use hutch_backup::Config;
use hutch_tests::{
    hutchd_bin, output_within, require_root, skipped, TestDaemon, Via, COMMAND_LIMIT,
};

/// `hutchd recover ARGS` against the daemon's state directory.
fn recover(d: &TestDaemon, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(hutchd_bin());
    cmd.arg("--dir").arg(d.path()).arg("recover").args(args);
    let out: Output = output_within(&mut cmd, b"", COMMAND_LIMIT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn json(d: &TestDaemon, path: &str) -> serde_json::Value {
    let (status, body) = d.http("GET", path, b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["metadata"].clone()
}

/// Loses the database: the daemon is stopped (containers keep running; the backup files
/// the last change made stale are written before it exits), `database/` removed, the
/// daemon started again on an empty one.
fn lose_database(d: &mut TestDaemon) {
    d.stop();
    std::fs::remove_dir_all(d.path().join("database")).unwrap();
    d.spawn();
}

fn try_read_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Config::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Polls `check` until it gives a value; panics with `what` and the last reason after
/// ten seconds (a file the daemon rewrites after answering).
fn settled<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) if std::time::Instant::now() > deadline => {
                panic!("waiting for {what}: {why}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

fn mounted(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy();
    text.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_ref()))
}

fn btrfs_available() -> bool {
    Command::new("mkfs.btrfs").arg("--version").output().is_ok()
}

/// What a user compares before and after.
fn snapshot_of_state(d: &TestDaemon) -> Vec<String> {
    vec![
        d.lxc_ok(&["list", "--format", "csv", "-c", "nsS"]),
        d.lxc_ok(&["config", "show", "c1"]),
        d.lxc_ok(&["config", "show", "c1", "--expanded"]),
        d.lxc_ok(&["config", "show", "c2"]),
        d.lxc_ok(&["config", "device", "show", "c1"]),
        d.lxc_ok(&["config", "show", "c1/s0"]),
        d.lxc_ok(&["storage", "list", "--format", "csv"]),
        d.lxc_ok(&[
            "storage", "volume", "list", "default", "--format", "csv", "-c", "tn",
        ]),
        d.lxc_ok(&["storage", "volume", "show", "default", "vol1"]),
        d.lxc_ok(&["profile", "show", "default"]),
        json(
            d,
            "/1.0/storage-pools/default/volumes/custom/vol1/snapshots",
        )
        .to_string(),
    ]
}

#[test]
fn recover_brings_back_pools_instances_snapshots_and_volumes() {
    let name = "recover_brings_back_pools_instances_snapshots_and_volumes";
    if !require_root(name) {
        return;
    }
    if !btrfs_available() {
        return skipped(name, "mkfs.btrfs is not installed");
    }
    let mut d = TestDaemon::start_with(&["--storage-backend", "btrfs"]);
    d.import_busybox(Via::Hutch);
    d.lxc_ok(&["storage", "create", "dpool", "dir"]);
    d.lxc_ok(&["storage", "volume", "create", "default", "vol1"]);
    d.lxc_ok(&[
        "storage",
        "volume",
        "set",
        "default",
        "vol1",
        "user.note",
        "kept",
    ]);
    d.lxc_ok(&["storage", "volume", "snapshot", "default", "vol1", "vs0"]);
    d.lxc_ok(&["launch", "bb", "c1"]);
    d.lxc_ok(&["config", "set", "c1", "user.color", "blue"]);
    d.lxc_ok(&[
        "config",
        "device",
        "add",
        "c1",
        "data",
        "disk",
        "pool=default",
        "source=vol1",
        "path=/srv/data",
    ]);
    d.sh_ok("c1", "echo before > /root/mark");
    d.lxc_ok(&["snapshot", "c1", "s0"]);
    d.lxc_ok(&["snapshot", "c1", "s1"]);
    d.lxc_ok(&["init", "bb", "c2", "-s", "dpool"]);
    d.lxc_ok(&["snapshot", "c2", "only"]);
    // A pool on a loop file of its own, unmounted with the database lost (as by a reboot).
    d.lxc_ok(&["storage", "create", "bpool", "btrfs", "size=300MiB"]);
    d.lxc_ok(&["init", "bb", "c3", "-s", "bpool"]);
    let before = snapshot_of_state(&d);
    let c3_before = d.lxc_ok(&["config", "show", "c3"]);

    d.kill();
    let bpool = d.path().join("storage-pools/bpool");
    let umount = Command::new("umount").arg(&bpool).status().unwrap();
    assert!(umount.success());
    lose_database(&mut d);
    assert_eq!(d.lxc_ok(&["list", "--format", "csv", "-c", "n"]).trim(), "");
    // The volumes stayed where they were (the start did not quarantine them).
    assert!(d
        .path()
        .join("storage-pools/default/containers/c1/rootfs")
        .exists());
    assert!(d
        .path()
        .join("storage-pools/dpool/containers/c2/rootfs")
        .exists());

    let (code, dry) = recover(&d, &["--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    for want in [
        "Pool default (btrfs",
        "Pool dpool (dir",
        "Pool bpool (btrfs",
        "c1",
        "2 snapshots",
        "c2",
        "c3",
        "vol1",
    ] {
        assert!(dry.contains(want), "{want} missing from:\n{dry}");
    }
    assert!(dry.contains("Profiles to re-create: default"), "{dry}");
    assert!(dry.contains("dry run: nothing was changed"), "{dry}");
    // Nothing changed.
    assert_eq!(d.lxc_ok(&["list", "--format", "csv", "-c", "n"]).trim(), "");
    assert!(!d
        .lxc_ok(&["storage", "list", "--format", "csv"])
        .contains("dpool"));
    assert!(!mounted(&bpool), "the dry run left bpool mounted");

    let (code, out) = recover(&d, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("recovered"), "{out}");
    let after = snapshot_of_state(&d);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a);
    }
    // The running container kept running and is reachable again; its files are there.
    assert_eq!(d.sh_ok("c1", "cat /root/mark").trim(), "before");
    assert_eq!(d.lxc_ok(&["config", "show", "c3"]), c3_before);
    assert!(mounted(&bpool));
    d.lxc_ok(&["start", "c3"]);
    d.lxc_ok(&["start", "c2"]);
    assert_eq!(d.sh_ok("c2", "echo up").trim(), "up");
    d.lxc_ok(&["restore", "c1", "s0"]);
    // A second recover finds nothing missing.
    let (code, again) = recover(&d, &[]);
    assert_eq!(code, 0, "{again}");
    assert!(again.contains("0 recovered, 0 refused"), "{again}");
    d.lxc_ok(&["stop", "--all", "--force"]);
}

#[test]
fn conflicts_and_hostile_backup_files_are_refused_by_name() {
    let name = "conflicts_and_hostile_backup_files_are_refused_by_name";
    if !require_root(name) {
        return;
    }
    let mut d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d.import_busybox(Via::Hutch);
    d.lxc_ok(&["storage", "create", "p2", "dir"]);
    d.lxc_ok(&["init", "bb", "x1"]);
    d.lxc_ok(&["init", "bb", "x2", "-s", "p2"]);
    d.lxc_ok(&["init", "bb", "x3", "-s", "p2"]);
    lose_database(&mut d);

    // The default pool first, then a new x2 takes the name of the one on p2.
    let (code, out) = recover(&d, &["--pool", "default"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Pool p2"), "{out}");
    d.import_busybox(Via::Hutch);
    d.lxc_ok(&["init", "bb", "x2"]);

    // Hostile files on p2: garbage, a name with `/`, another pool's file.
    let p2 = d.path().join("storage-pools/p2/containers");
    let plant = |dir: &str, yaml: &[u8]| {
        std::fs::create_dir_all(p2.join(dir).join("rootfs")).unwrap();
        std::fs::write(p2.join(dir).join("backup.yaml"), yaml).unwrap();
    };
    plant("evil1", b"\x00\xff{{{ not yaml");
    plant(
        "evil2",
        b"container: {name: ../../etc}\npool: {name: p2, driver: dir}\n",
    );
    plant(
        "evil3",
        b"container: {name: evil3}\npool: {name: default, driver: dir}\n",
    );

    let (code, out) = recover(&d, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("x2") && out.contains("exists already (on pool \"default\")"),
        "{out}"
    );
    assert!(out.contains("evil1") && out.contains("REFUSED"), "{out}");
    assert!(out.contains("names the instance \"../../etc\""), "{out}");
    assert!(out.contains("names pool \"default\", not \"p2\""), "{out}");
    // The rest came in: x3 on p2, and the pool itself; x2 stays the new one.
    let list = d.lxc_ok(&["list", "--format", "csv", "-c", "n"]);
    assert!(list.contains("x3") && !list.contains("evil"), "{list}");
    assert_eq!(
        json(&d, "/1.0/instances/x2")["expanded_devices"]["root"]["pool"],
        "default"
    );
    assert_eq!(
        json(&d, "/1.0/instances/x3")["expanded_devices"]["root"]["pool"],
        "p2"
    );
    assert!(d
        .lxc_ok(&["storage", "list", "--format", "csv"])
        .contains("p2"));
    // Nothing refused was touched.
    assert!(p2.join("evil1/backup.yaml").exists() && p2.join("x2/rootfs").exists());
    // The daemon still answers, and a second look changes nothing more.
    let (status, body) = d.http("POST", "/internal/recover/validate", b"{}");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn backup_files_follow_every_change_and_stay_out_of_the_container() {
    let name = "backup_files_follow_every_change_and_stay_out_of_the_container";
    if !require_root(name) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d.import_busybox(Via::Hutch);
    let pool = d.path().join("storage-pools/default");
    let yaml = |inst: &str| pool.join("containers").join(inst).join("backup.yaml");
    // The daemon rewrites a file just after answering the change: each check waits for
    // the file to agree with the API.
    let matches_api = |inst: &str| {
        settled(&format!("{inst}'s backup.yaml to match the API"), || {
            let c = try_read_config(&yaml(inst))?;
            let api = json(&d, &format!("/1.0/instances/{inst}"));
            let container = c.container.clone().ok_or("no container")?;
            let snaps: Vec<String> = json(&d, &format!("/1.0/instances/{inst}/snapshots"))
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().rsplit('/').next().unwrap().to_string())
                .collect();
            let mut listed: Vec<String> = c.snapshots.iter().map(|s| s.name.clone()).collect();
            listed.sort();
            let mut snaps = snaps;
            snaps.sort();
            let differs = [
                (container.name != inst, "name"),
                (
                    serde_json::to_value(&container.config).unwrap() != api["config"],
                    "config",
                ),
                (
                    serde_json::to_value(&container.devices).unwrap() != api["devices"],
                    "devices",
                ),
                (
                    serde_json::to_value(&container.expanded_config).unwrap()
                        != api["expanded_config"],
                    "expanded_config",
                ),
                (
                    c.pool.clone().map(|p| p.name).as_deref() != Some("default"),
                    "pool",
                ),
                (listed != snaps, "snapshots"),
            ];
            match differs.iter().find(|(d, _)| *d) {
                Some((_, what)) => Err(format!("{what} differs")),
                None => Ok(c),
            }
        })
    };
    d.lxc_ok(&["launch", "bb", "c1"]);
    matches_api("c1");
    let mode = std::fs::metadata(yaml("c1")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o400);

    d.lxc_ok(&["config", "set", "c1", "user.a", "1"]);
    assert_eq!(matches_api("c1").container.unwrap().config["user.a"], "1");
    d.lxc_ok(&["snapshot", "c1", "s0"]);
    d.lxc_ok(&["config", "set", "c1", "user.a", "2"]);
    assert_eq!(matches_api("c1").snapshots.len(), 1);
    d.lxc_ok(&["rename", "c1/s0", "c1/first"]);
    assert_eq!(matches_api("c1").snapshots[0].name, "first");
    d.lxc_ok(&["restore", "c1", "first"]);
    assert_eq!(matches_api("c1").container.unwrap().config["user.a"], "1");
    d.lxc_ok(&["profile", "set", "default", "user.p", "x"]);
    assert_eq!(
        matches_api("c1").container.unwrap().expanded_config["user.p"],
        "x"
    );
    d.lxc_ok(&["stop", "c1", "--force"]);
    d.lxc_ok(&["rename", "c1", "c9"]);
    matches_api("c9");
    assert!(!yaml("c1").exists());
    d.lxc_ok(&["delete", "c9/first"]);
    assert!(matches_api("c9").snapshots.is_empty());

    // Not in the container's view, and the container cannot write it.
    d.lxc_ok(&["start", "c9"]);
    let found = d.sh_ok(
        "c9",
        "find / -xdev -name backup.yaml 2>/dev/null; echo done",
    );
    assert_eq!(found.trim(), "done");

    // Custom volumes: the file beside the volume follows config, snapshots and renames.
    let vfile = |v: &str| pool.join("custom-backups").join(format!("{v}.yaml"));
    d.lxc_ok(&["storage", "volume", "create", "default", "v1"]);
    d.lxc_ok(&["storage", "volume", "set", "default", "v1", "user.k", "v"]);
    d.lxc_ok(&["storage", "volume", "snapshot", "default", "v1", "vs"]);
    settled("v1's file to follow its config and snapshot", || {
        let c = try_read_config(&vfile("v1"))?;
        let config = c.volume.ok_or("no volume")?.config;
        match (config.get("user.k"), c.volume_snapshots.first()) {
            (Some(v), Some(s)) if v == "v" && s.name == "vs" => Ok(()),
            other => Err(format!("not yet: {other:?}")),
        }
    });
    assert!(!pool.join("custom/v1").join("backup.yaml").exists());
    d.lxc_ok(&["storage", "volume", "rename", "default", "v1", "v2"]);
    settled("v1's file to go and v2's to come", || {
        let name = try_read_config(&vfile("v2"))?
            .volume
            .ok_or("no volume")?
            .name;
        match (vfile("v1").exists(), name == "v2") {
            (false, true) => Ok(()),
            other => Err(format!("v1 exists, v2 named: {other:?}")),
        }
    });
    // The pool describes itself.
    assert!(pool.join(".hutch-pool.yaml").exists());
    d.lxc_ok(&["stop", "--all", "--force"]);
}

#[test]
fn init_after_the_database_is_lost_leaves_the_volumes_for_recover() {
    let name = "init_after_the_database_is_lost_leaves_the_volumes_for_recover";
    if !require_root(name) {
        return;
    }
    let mut d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d.import_busybox(Via::Hutch);
    d.lxc_ok(&["launch", "bb", "y1"]);
    d.lxc_ok(&["snapshot", "y1", "s0"]);
    let before = d.lxc_ok(&["config", "show", "y1"]);
    lose_database(&mut d);
    // `hutchd init --auto` makes the default pool again, over the existing one.
    let mut init = Command::new(hutchd_bin());
    init.arg("--dir").arg(d.path()).args([
        "init",
        "--auto",
        "--storage-backend",
        "dir",
        "--network-bridge",
        "none",
    ]);
    let out = output_within(&mut init, b"", COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A restart in between: nothing is moved aside.
    d.kill();
    d.spawn();
    let vol = d.path().join("storage-pools/default/containers/y1");
    assert!(vol.join("rootfs").exists());
    let (code, out) = recover(&d, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Pool default (dir") && out.contains("in the database"),
        "{out}"
    );
    assert_eq!(d.lxc_ok(&["config", "show", "y1"]), before);
    assert_eq!(
        d.lxc_ok(&["list", "y1", "--format", "csv", "-c", "nsS"])
            .trim(),
        "y1,RUNNING,1"
    );
    d.lxc_ok(&["stop", "y1", "--force"]);
}
