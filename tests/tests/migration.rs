//! End-to-end: moving instances between hosts with LXD's migration API. hutchd receives
//! from the reference LXD (pull: hutchd dials LXD's operation websockets), LXD receives
//! from hutchd (push: hutchd dials LXD's), a transfer cut mid-way leaves nothing, and a
//! live migration of a running container is refused with LXD's message. Needs root.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use hutch_tests::{require_root, ReferenceLxd, TestDaemon, Via};
use serde_json::{json, Value};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Waits for the hutchd operation named by an async response; its final state.
fn wait_op(d: &TestDaemon, accepted: &Value) -> Value {
    let url = accepted["operation"].as_str().expect("an operation");
    let (_, body) = d.http("GET", &format!("{url}/wait?timeout=120"), b"");
    parse(&body)["metadata"].clone()
}

/// An LXD with `c1`, a busybox container with two snapshots and a file owned by 33:44,
/// started once so that LXD shifted its files to its id map (LXD 5.0 on `dir` does not use
/// idmapped mounts).
fn lxd_with_container(test: &str) -> Option<ReferenceLxd> {
    let lxd = ReferenceLxd::start(test)?;
    lxd.import_busybox();
    lxd.lxc_ok(&["init", "bb", "c1"]);
    let owned = lxd.lxd_dir().join("owned");
    std::fs::write(&owned, "from lxd\n").unwrap();
    lxd.lxc_ok(&[
        "file",
        "push",
        owned.to_str().unwrap(),
        "c1/etc/owned",
        "--uid",
        "33",
        "--gid",
        "44",
    ]);
    lxd.lxc_ok(&["start", "c1"]);
    lxd.lxc_ok(&["stop", "c1", "--force"]);
    let shifted = lxd.lxc_ok(&["config", "get", "c1", "volatile.last_state.idmap"]);
    assert!(shifted.contains("Hostid"), "LXD shifted c1: {shifted}");
    lxd.lxc_ok(&["snapshot", "c1", "s0"]);
    lxd.lxc_ok(&["snapshot", "c1", "s1"]);
    Some(lxd)
}

/// `POST /1.0/instances/c1 {"migration":true}` on LXD: its operation id and secrets.
fn lxd_migration_source(lxd: &ReferenceLxd, name: &str) -> (String, Value) {
    let out = lxd.lxc_ok(&[
        "query",
        "-X",
        "POST",
        "-d",
        r#"{"migration":true,"live":false}"#,
        &format!("/1.0/instances/{name}"),
    ]);
    let op = parse(&out);
    (
        op["id"].as_str().unwrap().to_string(),
        op["metadata"].clone(),
    )
}

fn assert_busybox_from_lxd(d: &TestDaemon, name: &str) {
    let (_, body) = d.http(
        "GET",
        &format!("/1.0/instances/{name}/snapshots?recursion=1"),
        b"",
    );
    let snaps: Vec<String> = parse(&body)["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(snaps, ["s0", "s1"], "{body}");
    let rootfs = d
        .path()
        .join(format!("storage-pools/default/containers/{name}/rootfs"));
    let busybox = std::fs::symlink_metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!((busybox.uid(), busybox.gid()), (0, 0), "stored unshifted");
    let owned = std::fs::metadata(rootfs.join("etc/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (33, 44));
    let snap_owned = d.path().join(format!(
        "storage-pools/default/containers-snapshots/{name}/s1/rootfs/etc/owned"
    ));
    let m = std::fs::metadata(snap_owned).unwrap();
    assert_eq!((m.uid(), m.gid()), (33, 44));
    // It boots, and inside the owners are the container's ids.
    d.hutch_ok(&["start", name]);
    let ls = d.hutch_ok(&["exec", name, "--", "stat", "-c", "%u:%g", "/etc/owned"]);
    assert_eq!(ls.trim(), "33:44");
    d.hutch_ok(&["stop", name, "--force"]);
}

#[test]
fn hutchd_pulls_a_container_from_lxd() {
    let test = "hutchd_pulls_a_container_from_lxd";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = lxd_with_container(test) else {
        return;
    };
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let (id, secrets) = lxd_migration_source(&lxd, "c1");
    let (_, lxd_c1) = (0, parse(&lxd.lxc_ok(&["query", "/1.0/instances/c1"])));
    let req = json!({
        "name": "c1",
        "architecture": lxd_c1["architecture"],
        "config": lxd_c1["config"],
        "source": {
            "type": "migration",
            "mode": "pull",
            "operation": format!("{}/1.0/operations/{id}", lxd.url),
            "certificate": lxd.server_cert(),
            "secrets": secrets,
            "base-image": lxd_c1["config"]["volatile.base_image"],
        }
    });
    let (status, body) = d.http("POST", "/1.0/instances", req.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let op = wait_op(&d, &parse(&body));
    assert_eq!(op["status"], "Success", "{op}\nLXD: {}", lxd.log());
    let (_, c1) = d.http("GET", "/1.0/instances/c1", b"");
    let c1 = parse(&c1);
    assert_eq!(
        c1["metadata"]["config"]["volatile.base_image"],
        lxd_c1["config"]["volatile.base_image"]
    );
    assert_busybox_from_lxd(&d, "c1");

    // A refresh sends only what the target lacks: a new snapshot and the main volume.
    lxd.lxc_ok(&["snapshot", "c1", "s2"]);
    let (id, secrets) = lxd_migration_source(&lxd, "c1");
    let req = json!({
        "name": "c1",
        "source": {
            "type": "migration", "mode": "pull", "refresh": true,
            "operation": format!("{}/1.0/operations/{id}", lxd.url),
            "certificate": lxd.server_cert(),
            "secrets": secrets,
        }
    });
    let (status, body) = d.http("POST", "/1.0/instances", req.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let op = wait_op(&d, &parse(&body));
    assert_eq!(op["status"], "Success", "{op}\nLXD: {}", lxd.log());
    let (_, body) = d.http("GET", "/1.0/instances/c1/snapshots", b"");
    assert_eq!(
        parse(&body)["metadata"],
        json!([
            "/1.0/instances/c1/snapshots/s0",
            "/1.0/instances/c1/snapshots/s1",
            "/1.0/instances/c1/snapshots/s2"
        ])
    );
}

#[test]
fn lxd_receives_a_container_pushed_by_hutchd() {
    let test = "lxd_receives_a_container_pushed_by_hutchd";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = ReferenceLxd::start(test) else {
        return;
    };
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["init", "bb", "c1"]);
    d.hutch_ok(&["snapshot", "c1", "s0"]);
    d.hutch_ok(&["snapshot", "c1", "s1"]);
    // The target: a push-mode create on LXD, whose metadata are its secrets.
    let create = json!({
        "name": "c1",
        "architecture": "x86_64",
        "profiles": ["default"],
        "source": {"type": "migration", "mode": "push", "certificate": ""}
    });
    let out = lxd.lxc_ok(&[
        "query",
        "-X",
        "POST",
        "-d",
        &create.to_string(),
        "/1.0/instances",
    ]);
    let target_op = parse(&out);
    let target = json!({
        "migration": true,
        "live": false,
        "target": {
            "certificate": lxd.server_cert(),
            "operation": format!("{}/1.0/operations/{}", lxd.url, target_op["id"].as_str().unwrap()),
            "secrets": target_op["metadata"],
        }
    });
    let (status, body) = d.http("POST", "/1.0/instances/c1", target.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let op = wait_op(&d, &parse(&body));
    assert_eq!(op["status"], "Success", "{op}\nLXD: {}", lxd.log());
    let waited = lxd.lxc_ok(&[
        "query",
        &format!(
            "/1.0/operations/{}/wait?timeout=60",
            target_op["id"].as_str().unwrap()
        ),
    ]);
    assert_eq!(parse(&waited)["status"], "Success", "{waited}");
    let listed = lxd.lxc_ok(&["list", "c1", "--format", "csv", "-c", "nsS"]);
    assert_eq!(listed.trim(), "c1,STOPPED,2");
    let snaps = lxd.lxc_ok(&["query", "/1.0/instances/c1/snapshots"]);
    assert!(snaps.contains("s0") && snaps.contains("s1"), "{snaps}");

    // A snapshot alone becomes an instance of its own on the target.
    let create = json!({
        "name": "from-s0",
        "architecture": "x86_64",
        "profiles": ["default"],
        "source": {"type": "migration", "mode": "push", "certificate": "", "instance_only": true}
    });
    let target_op = parse(&lxd.lxc_ok(&[
        "query",
        "-X",
        "POST",
        "-d",
        &create.to_string(),
        "/1.0/instances",
    ]));
    let target_id = target_op["id"].as_str().unwrap().to_string();
    let post = json!({"name": "from-s0", "migration": true, "live": false, "target": {
        "certificate": lxd.server_cert(),
        "operation": format!("{}/1.0/operations/{target_id}", lxd.url),
        "secrets": target_op["metadata"],
    }});
    let (status, body) = d.http(
        "POST",
        "/1.0/instances/c1/snapshots/s0",
        post.to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let accepted = parse(&body);
    assert_eq!(accepted["metadata"]["description"], "Transferring snapshot");
    assert_eq!(wait_op(&d, &accepted)["status"], "Success");
    let waited = lxd.lxc_ok(&[
        "query",
        &format!("/1.0/operations/{target_id}/wait?timeout=60"),
    ]);
    assert_eq!(parse(&waited)["status"], "Success", "{waited}");
    assert_eq!(
        lxd.lxc_ok(&["list", "from-s0", "--format", "csv", "-c", "nS"])
            .trim(),
        "from-s0,0"
    );

    // A running container goes stateless (live:false): two passes, the last one frozen.
    d.hutch_ok(&["launch", "bb", "c2"]);
    d.hutch_ok(&["exec", "c2", "--", "sh", "-c", "echo running > /root/state"]);
    let create = json!({
        "name": "c2",
        "architecture": "x86_64",
        "profiles": ["default"],
        "source": {"type": "migration", "mode": "push", "certificate": "", "instance_only": true}
    });
    let target_op = parse(&lxd.lxc_ok(&[
        "query",
        "-X",
        "POST",
        "-d",
        &create.to_string(),
        "/1.0/instances",
    ]));
    let target_id = target_op["id"].as_str().unwrap().to_string();
    let target = json!({
        "migration": true,
        "live": false,
        "instance_only": true,
        "target": {
            "certificate": lxd.server_cert(),
            "operation": format!("{}/1.0/operations/{target_id}", lxd.url),
            "secrets": target_op["metadata"],
        }
    });
    let (status, body) = d.http("POST", "/1.0/instances/c2", target.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let op = wait_op(&d, &parse(&body));
    assert_eq!(op["status"], "Success", "{op}\nLXD: {}", lxd.log());
    let waited = lxd.lxc_ok(&[
        "query",
        &format!("/1.0/operations/{target_id}/wait?timeout=60"),
    ]);
    assert_eq!(parse(&waited)["status"], "Success", "{waited}");
    let pulled = lxd.lxd_dir().join("state");
    lxd.lxc_ok(&["file", "pull", "c2/root/state", pulled.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&pulled).unwrap(), "running\n");
    // The source runs on, thawed.
    d.hutch_ok(&["exec", "c2", "--", "true"]);
    d.hutch_ok(&["stop", "c2", "--force"]);
}

#[test]
fn a_cut_transfer_leaves_nothing_on_the_target() {
    let test = "a_cut_transfer_leaves_nothing_on_the_target";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = lxd_with_container(test) else {
        return;
    };
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    // A bad header: secrets that name no websocket of the source's operation.
    let (id, _) = lxd_migration_source(&lxd, "c1");
    let req = json!({
        "name": "c1",
        "source": {
            "type": "migration", "mode": "pull",
            "operation": format!("{}/1.0/operations/{id}", lxd.url),
            "certificate": lxd.server_cert(),
            "secrets": {"control": "0".repeat(64), "fs": "1".repeat(64)},
        }
    });
    let (status, body) = d.http("POST", "/1.0/instances", req.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let op = wait_op(&d, &parse(&body));
    assert_eq!(op["status"], "Failure", "{op}");
    assert_nothing_made(&d, "c1");

    // Cancelled mid-way (DELETE of the target's operation once data flows): the row, the
    // volume and the snapshots received so far all go.
    let big = lxd.lxd_dir().join("big");
    let status = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=200", "status=none"])
        .arg(format!("of={}", big.display()))
        .status()
        .unwrap();
    assert!(status.success());
    lxd.lxc_ok(&["file", "push", big.to_str().unwrap(), "c1/root/big"]);
    let (id, secrets) = lxd_migration_source(&lxd, "c1");
    let req = json!({
        "name": "c2",
        "source": {
            "type": "migration", "mode": "pull",
            "operation": format!("{}/1.0/operations/{id}", lxd.url),
            "certificate": lxd.server_cert(),
            "secrets": secrets,
        }
    });
    let (status, body) = d.http("POST", "/1.0/instances", req.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let accepted = parse(&body);
    assert_eq!(accepted["metadata"]["may_cancel"], true);
    // The row is there before the answer: the name is taken.
    let again = json!({"name": "c2", "source": {"type": "migration", "mode": "push"}});
    let (status, _) = d.http("POST", "/1.0/instances", again.to_string().as_bytes());
    assert_eq!(status, 409);
    let url = accepted["operation"].as_str().unwrap().to_string();
    hutch_tests::wait_until("data flowing", Duration::from_secs(60), || {
        let (_, op) = d.http("GET", &url, b"");
        parse(&op)["metadata"]["metadata"]["fs_progress"].is_string()
    });
    let (status, body) = d.http("DELETE", &url, b"");
    assert_eq!(status, 200, "{body}");
    let op = wait_op(&d, &accepted);
    assert_eq!(op["status"], "Cancelled", "{op}");
    assert_nothing_made(&d, "c2");

    // Push mode, cancelled while it waits for the source: nothing is left either.
    let req = json!({"name": "c3", "source": {"type": "migration", "mode": "push"}});
    let (status, body) = d.http("POST", "/1.0/instances", req.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let accepted = parse(&body);
    assert_eq!(accepted["metadata"]["class"], "websocket");
    let secrets = &accepted["metadata"]["metadata"];
    assert_eq!(secrets["control"].as_str().unwrap().len(), 64, "{secrets}");
    let url = accepted["operation"].as_str().unwrap();
    let (status, body) = d.http("DELETE", url, b"");
    assert_eq!(status, 200, "{body}");
    let op = wait_op(&d, &accepted);
    assert_eq!(op["status"], "Cancelled", "{op}");
    assert_nothing_made(&d, "c3");

    // Unknown modes are LXD's 501.
    let req = json!({"name": "c4", "source": {"type": "migration", "mode": "relay"}});
    let (status, body) = d.http("POST", "/1.0/instances", req.to_string().as_bytes());
    assert_eq!(status, 501, "{body}");
    assert_eq!(parse(&body)["error"], "Mode \"relay\" not implemented");
}

fn assert_nothing_made(d: &TestDaemon, name: &str) {
    let (status, _) = d.http("GET", &format!("/1.0/instances/{name}"), b"");
    assert_eq!(status, 404);
    let pool = d.path().join("storage-pools/default");
    for dir in ["containers", "containers-snapshots"] {
        let left: Vec<String> = std::fs::read_dir(pool.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{dir} keeps {left:?}");
    }
}

#[test]
fn live_migration_of_a_running_container_is_refused() {
    let test = "live_migration_of_a_running_container_is_refused";
    if !require_root(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "c1"]);
    // pylxd sends only `migration`: a missing `live` means live.
    for body in [
        json!({"migration": true}),
        json!({"migration": true, "live": true}),
    ] {
        let (status, resp) = d.http("POST", "/1.0/instances/c1", body.to_string().as_bytes());
        assert_eq!(status, 500, "{resp}");
        assert_eq!(
            parse(&resp)["error"],
            "Unable to perform container live migration. CRIU isn't installed on the source server"
        );
    }
    // Stateless is allowed: a websocket operation with two 64-hex secrets, which times out
    // when nobody connects.
    let (status, resp) = d.http(
        "POST",
        "/1.0/instances/c1",
        json!({"migration": true, "live": false})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 202, "{resp}");
    let accepted = parse(&resp);
    let meta = &accepted["metadata"];
    assert_eq!(meta["class"], "websocket");
    assert_eq!(meta["description"], "Migrating instance");
    for k in ["control", "fs"] {
        let s = meta["metadata"][k].as_str().unwrap();
        assert!(
            s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()),
            "{s}"
        );
    }
    let op = wait_op(&d, &accepted);
    assert_eq!(op["err"], "Timed out waiting for migration connections");
    d.hutch_ok(&["stop", "c1", "--force"]);
    std::thread::sleep(Duration::from_millis(10));
}

/// The daemon's HTTPS base URL, or None (said by the test's name) where this hutchd has no
/// HTTPS listener yet (`enable_https` panics when none comes up).
fn https_or_skip(d: &TestDaemon, test: &str) -> Option<String> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let url = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.enable_https()));
    std::panic::set_hook(prev);
    match url {
        Ok(url) => Some(url),
        Err(_) => {
            hutch_tests::skipped(
                test,
                "this hutchd has no HTTPS listener (core.https_address)",
            );
            None
        }
    }
}

/// A hutchd with `c1` (stopped): two snapshots, each with its own `/root/data`.
fn hutchd_with_container(backend: &str) -> TestDaemon {
    let d = TestDaemon::start_with(&["--storage-backend", backend]);
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "c1"]);
    // Contents of different lengths: rsync's quick check (size and mtime in seconds, as
    // LXD runs it) would take two same-size writes within a second for one.
    for (i, v) in ["s0", "s1", "main"].into_iter().enumerate() {
        let content = format!("{v}{}", ".".repeat(i));
        d.hutch_ok(&[
            "exec",
            "c1",
            "--",
            "sh",
            "-c",
            &format!("echo {content} > /root/data; chown 33:44 /root/data"),
        ]);
        if v != "main" {
            d.hutch_ok(&["snapshot", "c1", v]);
        }
    }
    d.hutch_ok(&["stop", "c1", "--force"]);
    d
}

/// Moves `c1` from a hutchd on `from` to one on `to`, pulled or pushed.
fn between_hutchds(test: &str, from: &str, to: &str, push: bool) {
    if !require_root(test) {
        return;
    }
    let src = hutchd_with_container(from);
    let dst = TestDaemon::start_with(&["--storage-backend", to]);
    // Only the side that is dialled listens.
    let listening = if push { &dst } else { &src };
    let Some(url) = https_or_skip(listening, test) else {
        return;
    };
    let accepted = if push {
        let create = json!({"name": "c1", "architecture": "x86_64", "source": {"type": "migration", "mode": "push"}});
        let (status, body) = dst.http("POST", "/1.0/instances", create.to_string().as_bytes());
        assert_eq!(status, 202, "{body}");
        let target_op = parse(&body);
        let id = target_op["metadata"]["id"].as_str().unwrap();
        let post = json!({"migration": true, "live": false, "target": {
            "certificate": dst.server_cert(),
            "operation": format!("{url}/1.0/operations/{id}"),
            "secrets": target_op["metadata"]["metadata"],
        }});
        let (status, body) = src.http("POST", "/1.0/instances/c1", post.to_string().as_bytes());
        assert_eq!(status, 202, "{body}");
        assert_eq!(wait_op(&src, &parse(&body))["status"], "Success");
        target_op
    } else {
        let (status, body) = src.http(
            "POST",
            "/1.0/instances/c1",
            br#"{"migration":true,"live":false}"#,
        );
        assert_eq!(status, 202, "{body}");
        let source_op = parse(&body);
        let create = json!({"name": "c1", "architecture": "x86_64", "source": {
            "type": "migration", "mode": "pull",
            "operation": format!("{url}/1.0/operations/{}", source_op["metadata"]["id"].as_str().unwrap()),
            "certificate": src.server_cert(),
            "secrets": source_op["metadata"]["metadata"],
        }});
        let (status, body) = dst.http("POST", "/1.0/instances", create.to_string().as_bytes());
        assert_eq!(status, 202, "{body}");
        parse(&body)
    };
    let op = wait_op(&dst, &accepted);
    assert_eq!(op["status"], "Success", "{op}");
    let pool = dst.path().join("storage-pools/default");
    for (vol, want) in [
        ("containers-snapshots/c1/s0", "s0"),
        ("containers-snapshots/c1/s1", "s1."),
        ("containers/c1", "main.."),
    ] {
        let data = pool.join(vol).join("rootfs/root/data");
        assert_eq!(
            std::fs::read_to_string(&data).unwrap().trim(),
            want,
            "{vol}"
        );
        let m = std::fs::metadata(&data).unwrap();
        assert_eq!((m.uid(), m.gid()), (33, 44), "{vol}");
        if from == "btrfs" && to == "btrfs" && vol.contains("snapshots") {
            // Sent as btrfs streams: the subvolume records where it came from.
            let out = std::process::Command::new("btrfs")
                .args(["subvolume", "show"])
                .arg(pool.join(vol))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let received = text
                .lines()
                .find(|l| l.trim_start().starts_with("Received UUID:"))
                .unwrap_or_default();
            assert!(
                !received.trim().ends_with('-'),
                "{vol} was not received: {text}"
            );
        }
    }
    dst.hutch_ok(&["start", "c1"]);
    assert_eq!(
        dst.hutch_ok(&["exec", "c1", "--", "cat", "/root/data"])
            .trim(),
        "main.."
    );
    dst.hutch_ok(&["stop", "c1", "--force"]);
}

#[test]
fn btrfs_to_btrfs_pulled_as_btrfs_streams() {
    between_hutchds(
        "btrfs_to_btrfs_pulled_as_btrfs_streams",
        "btrfs",
        "btrfs",
        false,
    );
}

#[test]
fn btrfs_to_btrfs_pushed_as_btrfs_streams() {
    between_hutchds(
        "btrfs_to_btrfs_pushed_as_btrfs_streams",
        "btrfs",
        "btrfs",
        true,
    );
}

#[test]
fn btrfs_to_dir_pulled_with_rsync() {
    between_hutchds("btrfs_to_dir_pulled_with_rsync", "btrfs", "dir", false);
}

#[test]
fn btrfs_to_dir_pushed_with_rsync() {
    between_hutchds("btrfs_to_dir_pushed_with_rsync", "btrfs", "dir", true);
}

#[test]
fn lxc_copies_between_lxd_and_hutchd() {
    let test = "lxc_copies_between_lxd_and_hutchd";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = lxd_with_container(test) else {
        return;
    };
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let url = d.enable_https();
    let (status, body) = d.http(
        "PATCH",
        "/1.0",
        json!({"config": {"core.trust_password": "s3cret"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    lxd.lxc_ok(&[
        "remote",
        "add",
        "h1",
        &url,
        "--accept-certificate",
        "--password",
        "s3cret",
    ]);
    // LXD to hutchd (hutchd pulls from LXD), with LXD's own client.
    lxd.lxc_ok(&["copy", "c1", "h1:c1"]);
    assert_busybox_from_lxd(&d, "c1");
    // And back (LXD pulls from hutchd): LXD dials hutchd's operation websockets.
    lxd.lxc_ok(&["copy", "h1:c1", "back"]);
    assert_eq!(
        lxd.lxc_ok(&["list", "back", "--format", "csv", "-c", "nsS"])
            .trim(),
        "back,STOPPED,2"
    );
    // lxc move with --stateless: the source is gone afterwards.
    lxd.lxc_ok(&["move", "h1:c1", "moved"]);
    let (status, _) = d.http("GET", "/1.0/instances/c1", b"");
    assert_eq!(status, 404);
    assert_eq!(
        lxd.lxc_ok(&["list", "moved", "--format", "csv", "-c", "nS"])
            .trim(),
        "moved,2"
    );
}

#[test]
fn a_source_killed_mid_way_leaves_nothing_on_the_target() {
    let test = "a_source_killed_mid_way_leaves_nothing_on_the_target";
    if !require_root(test) {
        return;
    }
    let mut src = hutchd_with_container("dir");
    let dst = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let url = src.enable_https();
    // Enough data that the transfer is still running when the source dies.
    let big = src
        .path()
        .join("storage-pools/default/containers/c1/rootfs/root/big");
    let status = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=300", "status=none"])
        .arg(format!("of={}", big.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let (status, body) = src.http(
        "POST",
        "/1.0/instances/c1",
        br#"{"migration":true,"live":false}"#,
    );
    assert_eq!(status, 202, "{body}");
    let source_op = parse(&body);
    let create = json!({"name": "c1", "source": {
        "type": "migration", "mode": "pull",
        "operation": format!("{url}/1.0/operations/{}", source_op["metadata"]["id"].as_str().unwrap()),
        "certificate": src.server_cert(),
        "secrets": source_op["metadata"]["metadata"],
    }});
    let (status, body) = dst.http("POST", "/1.0/instances", create.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let accepted = parse(&body);
    let op_url = accepted["operation"].as_str().unwrap().to_string();
    hutch_tests::wait_until("data flowing", Duration::from_secs(60), || {
        let (_, op) = dst.http("GET", &op_url, b"");
        parse(&op)["metadata"]["metadata"]["fs_progress"].is_string()
    });
    src.kill();
    let mut op = Value::Null;
    hutch_tests::wait_until("the target to fail", Duration::from_secs(60), || {
        let (_, body) = dst.http("GET", &op_url, b"");
        op = parse(&body)["metadata"].clone();
        if op["status"] == "Running" {
            let log = std::fs::read_to_string(dst.path().join("hutchd.log")).unwrap_or_default();
            eprintln!("{}", &log[log.len().saturating_sub(1500)..]);
        }
        op["status"] != "Running"
    });
    assert_eq!(op["status"], "Failure", "{op}");
    assert_nothing_made(&dst, "c1");
    // The source's transfer helpers (rsync, netcat) went with it.
    hutch_tests::wait_until(
        "the source's rsync to exit",
        Duration::from_secs(30),
        || hutch_tests::processes_under(src.path()).is_empty(),
    );
}
