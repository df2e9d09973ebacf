//! `hutch copy` and `hutch move` of a container with two snapshots between two servers over
//! HTTPS, as lxc's CopyInstance does it (pull, push and relay modes), a snapshot copied
//! as a new instance, and a stateless move of a running container (started again on the
//! target, gone from the source). Between two hutchd, and between two reference LXDs (the
//! API's final word, which checks the client's half alone).

use hutch_tests::{
    busybox_image, require_root, unique_name, HutchClient, ReferenceLxd, TestDaemon, TestDir,
};

/// `NAME,STATE` rows of `list REMOTE:`.
fn states(h: &HutchClient, remote: &str) -> String {
    h.ok(&["list", &format!("{remote}:"), "-c", "ns", "-f", "csv"])
}

/// The snapshot names of `REMOTE:NAME`, sorted.
fn snapshots(h: &HutchClient, remote: &str, name: &str) -> Vec<String> {
    let out = h.ok(&[
        "query",
        &format!("{remote}:/1.0/instances/{name}/snapshots"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let mut names: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str()?.rsplit('/').next().map(String::from))
        .collect();
    names.sort();
    names
}

/// The token on the last line of `config trust add`'s output.
fn token_of(out: &str) -> String {
    assert!(out.contains("certificate add token:"), "{out}");
    out.lines().last().unwrap_or_default().trim().to_string()
}

/// The copy and move flow from remote `a` (which has image `bb`) to remote `b`.
fn copy_move_flow(h: &HutchClient) {
    // Images: b pulls a's (private, so with a secret a makes) by alias, and launches
    // from a's image by the same pull.
    h.ok(&["image", "copy", "a:bb", "b:", "--alias", "bb-copy"]);
    let images = h.ok(&["image", "list", "b:", "-f", "csv", "-c", "lf"]);
    assert!(images.contains("bb-copy,"), "{images}");
    let from_image = unique_name("ci");
    h.ok(&["launch", "a:bb", &format!("b:{from_image}")]);
    assert!(states(h, "b").contains(&format!("{from_image},RUNNING")));
    h.ok(&["delete", "--force", &format!("b:{from_image}")]);

    let c1 = unique_name("c1");
    h.ok(&["launch", "a:bb", &format!("a:{c1}")]);
    h.ok(&["snapshot", &format!("a:{c1}"), "snap0"]);
    h.ok(&["snapshot", &format!("a:{c1}"), "snap1"]);
    h.ok(&["stop", "--force", &format!("a:{c1}")]);

    // Pull (the default): the instance and both snapshots.
    h.ok(&["copy", &format!("a:{c1}"), "b:"]);
    assert!(states(h, "b").contains(&format!("{c1},STOPPED")));
    assert_eq!(snapshots(h, "b", &c1), ["snap0", "snap1"]);

    // Push and relay, with a new name; --instance-only leaves the snapshots.
    let pushed = unique_name("cp");
    h.ok(&[
        "copy",
        &format!("a:{c1}"),
        &format!("b:{pushed}"),
        "--mode",
        "push",
    ]);
    assert_eq!(snapshots(h, "b", &pushed), ["snap0", "snap1"]);
    let relayed = unique_name("cr");
    h.ok(&[
        "copy",
        &format!("a:{c1}"),
        &format!("b:{relayed}"),
        "--mode",
        "relay",
        "--instance-only",
    ]);
    assert!(snapshots(h, "b", &relayed).is_empty());
    h.ok(&["start", &format!("b:{relayed}")]);
    assert_eq!(
        h.ok(&["exec", &format!("b:{relayed}"), "--", "echo", "relayed"]),
        "relayed\n"
    );

    // A snapshot as a new instance.
    let from_snap = unique_name("cs");
    h.ok(&["copy", &format!("a:{c1}/snap0"), &format!("b:{from_snap}")]);
    assert!(states(h, "b").contains(&format!("{from_snap},STOPPED")));
    assert!(snapshots(h, "b", &from_snap).is_empty());

    // A stateless move of a running container: running on b, gone from a.
    let moved = unique_name("cm");
    h.ok(&["start", &format!("a:{c1}")]);
    h.ok(&[
        "move",
        &format!("a:{c1}"),
        &format!("b:{moved}"),
        "--stateless",
    ]);
    assert!(!states(h, "a").contains(&c1), "{}", states(h, "a"));
    assert!(states(h, "b").contains(&format!("{moved},RUNNING")));
    assert_eq!(snapshots(h, "b", &moved), ["snap0", "snap1"]);
    assert_eq!(
        h.ok(&["exec", &format!("b:{moved}"), "--", "echo", "moved"]),
        "moved\n"
    );
    for n in [&c1, &pushed, &relayed, &from_snap, &moved] {
        let _ = h.run(&["delete", "--force", &format!("b:{n}")], b"");
    }
}

#[test]
fn copy_and_move_between_reference_lxds() {
    let test = "copy_and_move_between_reference_lxds";
    if !require_root(test) {
        return;
    }
    let Some(a) = ReferenceLxd::start(test) else {
        return;
    };
    let Some(b) = ReferenceLxd::start(test) else {
        return;
    };
    let work = TestDir::new();
    let image = work.path().join("bb.tar.gz");
    busybox_image(work.path(), &image).expect("busybox image");
    a.lxc_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    let h = HutchClient::new();
    for (name, lxd) in [("a", &a), ("b", &b)] {
        let token = token_of(&lxd.lxc_ok(&["config", "trust", "add", "--name", "hutch"]));
        h.ok(&["remote", "add", name, &token]);
    }
    copy_move_flow(&h);
}

#[test]
fn copy_and_move_between_hutchds() {
    let test = "copy_and_move_between_hutchds";
    if !require_root(test) {
        return;
    }
    let a = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let b = TestDaemon::start_with(&["--storage-backend", "dir"]);
    a.import_busybox(hutch_tests::Via::Hutch);
    let h = HutchClient::new();
    for (name, d) in [("a", &a), ("b", &b)] {
        d.enable_https();
        let token = token_of(&d.hutch_ok(&["config", "trust", "add", "--name", "hutch"]));
        h.ok(&["remote", "add", name, &token]);
    }
    copy_move_flow(&h);
}
