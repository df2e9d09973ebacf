//! End-to-end: a cluster's first member, with its shared state in a real etcd (Debian's
//! etcd-server on loopback). `hutch cluster enable` publishes the member in etcd and keeps
//! a heartbeat lease; LXD's `lxc cluster list` and `lxc list` (LOCATION) read it; the
//! membership survives a daemon restart; a daemon gone (kill -9) loses its heartbeat key
//! by etcd's clock and takes it again when back; etcd gone gives 503s on cluster reads
//! while the rest of the API serves; leaving removes the member. Needs root.

use std::time::Duration;

use hutch_tests::etcd::Etcd;
use hutch_tests::{require_root, skipped, wait_until, TestDaemon, Via};
use serde_json::Value;

/// Generous: every wait below is for a state, never a measure of speed.
const LIMIT: Duration = Duration::from_secs(60);

fn get(d: &TestDaemon, path: &str) -> (u16, Value) {
    let (status, body) = d.http("GET", path, b"");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

fn member_status(d: &TestDaemon) -> String {
    let (_, v) = get(d, "/1.0/cluster/members/n1");
    v["metadata"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_first_member_lives_in_etcd_and_lxc_sees_the_cluster() {
    let test = "the_first_member_lives_in_etcd_and_lxc_sees_the_cluster";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let mut d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let mut etcd = Etcd::start(d.path());

    // Standalone: lxc says so.
    let out = d.lxc(&["cluster", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("isn't part of a cluster"), "{err}");
    // Enabling needs the network address, then etcd.
    let err = d.hutch_err(&["cluster", "enable", "n1"]);
    assert!(err.contains("not available on the network"), "{err}");
    let url = d.enable_https();
    let err = d.hutch_err(&["cluster", "enable", "n1"]);
    assert!(err.contains("cluster.etcd_endpoints"), "{err}");
    let err = d.hutch_err(&["config", "set", "cluster.offline_threshold", "1"]);
    assert!(err.contains("3 or more"), "{err}");
    d.hutch_ok(&["config", "set", "cluster.offline_threshold", "3"]);

    let out = d.hutch_ok(&["cluster", "enable", "n1", "--etcd", &etcd.url()]);
    assert!(out.contains("Clustering enabled"), "{out}");
    let err = d.hutch_err(&["cluster", "enable", "n2"]);
    assert!(err.contains("already clustered"), "{err}");
    let list = d.lxc_ok(&["cluster", "list", "--format", "csv"]);
    assert_eq!(
        list.trim(),
        format!(
            "n1,{url},database,{},default,,ONLINE,Fully operational",
            std::env::consts::ARCH
        )
    );
    assert_eq!(d.hutch_ok(&["cluster", "list", "--format", "csv"]), list);
    let show = d.hutch_ok(&["cluster", "show", "n1"]);
    assert!(show.contains("server_name: n1"), "{show}");
    let (status, _) = get(&d, "/1.0/cluster/members/nope");
    assert_eq!(status, 404);
    let (_, server) = get(&d, "/1.0");
    assert_eq!(server["metadata"]["environment"]["server_clustered"], true);
    assert_eq!(server["metadata"]["environment"]["server_name"], "n1");
    let keys = etcd.keys("/hutch/clusters/");
    assert!(keys.iter().any(|k| k.ends_with("/members/n1")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with("/heartbeat/n1")),
        "{keys:?}"
    );

    // Instances are located on the member (lxc adds LOCATION for a cluster).
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["init", "bb", "c1"]);
    assert_eq!(
        d.lxc_ok(&["list", "-c", "nL", "--format", "csv"]).trim(),
        "c1,n1"
    );

    // A daemon gone: its heartbeat key expires by etcd's clock; back, it beats again.
    d.kill();
    wait_until("the heartbeat key to expire", LIMIT, || {
        !etcd
            .keys("/hutch/clusters/")
            .iter()
            .any(|k| k.ends_with("/heartbeat/n1"))
    });
    assert!(etcd
        .keys("/hutch/clusters/")
        .iter()
        .any(|k| k.ends_with("/members/n1")));
    d.spawn();
    wait_until("n1 online again", LIMIT, || member_status(&d) == "Online");
    assert_eq!(get(&d, "/1.0/cluster").1["metadata"]["enabled"], true);

    // etcd gone: cluster reads fail clearly; the rest of the API serves.
    etcd.kill();
    let (status, v) = get(&d, "/1.0/cluster/members");
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("etcd"),
        "{v}"
    );
    assert_eq!(get(&d, "/1.0/instances").0, 200);
    etcd.restart();
    wait_until("n1 online after etcd's return", LIMIT, || {
        member_status(&d) == "Online"
    });

    // Leaving (the last member may): standalone again, nothing left in etcd.
    let (status, body) = d.http(
        "PUT",
        "/1.0/cluster",
        br#"{"server_name":"","enabled":false}"#,
    );
    assert_eq!(status, 202, "{body}");
    wait_until("standalone again", LIMIT, || {
        get(&d, "/1.0/cluster").1["metadata"]["enabled"] == false
    });
    assert!(etcd.keys("/hutch/clusters/").is_empty());
    assert_eq!(
        d.lxc_ok(&["list", "-c", "n", "--format", "csv"]).trim(),
        "c1"
    );
    d.hutch_ok(&["delete", "c1"]);
}
