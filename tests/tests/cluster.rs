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

/// The token `hutch cluster add` printed (its last line).
fn token_of(out: &str) -> String {
    out.lines().last().unwrap_or_default().trim().to_string()
}

#[test]
fn a_second_member_joins_by_token_and_each_sees_the_other_go_offline() {
    let test = "a_second_member_joins_by_token_and_each_sees_the_other_go_offline";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let d1 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let mut d2 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let etcd = Etcd::start(d1.path());
    let url1 = d1.enable_https();
    let url2 = d2.enable_https();
    d1.hutch_ok(&["config", "set", "cluster.offline_threshold", "3"]);
    d1.hutch_ok(&["cluster", "enable", "n1", "--etcd", &etcd.url()]);

    // A token whose fingerprint is not the member's: refused, nothing joined.
    let token = token_of(&d1.hutch_ok(&["cluster", "add", "n2"]));
    let mut forged: Value =
        serde_json::from_slice(&hutch_tls::base64_decode(&token).expect("base64 token"))
            .expect("json token");
    forged["fingerprint"] = "00".repeat(32).into();
    let forged = hutch_tls::base64_encode(forged.to_string().as_bytes());
    let err = d2.hutch_err(&["cluster", "join", &forged]);
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(get(&d2, "/1.0/cluster").1["metadata"]["enabled"], false);
    // LXD's client asks for tokens the same way (its own print of the same shape).
    let lxc_token = d1.lxc_ok(&["cluster", "add", "n3"]);
    assert!(
        lxc_token.starts_with("Member n3 join token:"),
        "{lxc_token}"
    );
    let n3_token = token_of(&lxc_token);
    // A name that is a member already gets no token.
    let err = d1.hutch_err(&["cluster", "add", "n1"]);
    assert!(err.contains("already has a member"), "{err}");

    // The real token joins; it is spent.
    let out = d2.hutch_ok(&["cluster", "join", &token]);
    assert!(out.contains("Joined the cluster as n2"), "{out}");
    let err = d2.hutch_err(&["cluster", "join", &token]);
    assert!(err.contains("already clustered"), "{err}");
    let arch = std::env::consts::ARCH;
    let expected = format!(
        "n1,{url1},database,{arch},default,,ONLINE,Fully operational\n\
         n2,{url2},database,{arch},default,,ONLINE,Fully operational"
    );
    for d in [&d1, &d2] {
        let list = d.lxc_ok(&["cluster", "list", "--format", "csv"]);
        assert_eq!(list.trim(), expected);
    }
    // A third joins with `hutchd init --join` and lxc's token, its address set by init.
    let d3 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let port3 = hutch_tests::free_port().to_string();
    let mut init = std::process::Command::new(hutch_tests::hutchd_bin());
    init.arg("--dir").arg(d3.path()).args([
        "init",
        "--network-bridge",
        "none",
        "--network-address",
        "127.0.0.1",
        "--network-port",
        &port3,
        "--join",
        &n3_token,
    ]);
    let out = hutch_tests::output_within(&mut init, b"", hutch_tests::COMMAND_LIMIT);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("created cluster member \"n3\""), "{text}");
    wait_until("n3 online on n1", LIMIT, || {
        get(&d1, "/1.0/cluster/members/n3").1["metadata"]["status"] == "Online"
    });
    let (status, body) = d3.http(
        "PUT",
        "/1.0/cluster",
        br#"{"server_name":"","enabled":false}"#,
    );
    assert_eq!(status, 202, "{body}");
    drop(d3);
    // Each member trusts the other's certificate, as a server.
    for (d, other) in [(&d1, "n2"), (&d2, "n1")] {
        let (_, certs) = get(d, "/1.0/certificates?recursion=1");
        let found = certs["metadata"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "server" && c["name"] == other);
        assert!(found, "{certs}");
    }

    // n2 gone: n1 shows it Offline within the threshold's reach; back, Online.
    d2.kill();
    wait_until("n2 offline on n1", LIMIT, || {
        let (_, v) = get(&d1, "/1.0/cluster/members/n2");
        v["metadata"]["status"] == "Offline"
            && v["metadata"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("No heartbeat for"))
    });
    let list = d1.lxc_ok(&["cluster", "list", "--format", "csv"]);
    assert!(list.contains("n2,") && list.contains("OFFLINE"), "{list}");
    d2.spawn();
    wait_until("n2 online again on n1", LIMIT, || {
        get(&d1, "/1.0/cluster/members/n2").1["metadata"]["status"] == "Online"
    });
    // The first member cannot leave a cluster that has another.
    let (status, body) = d1.http(
        "PUT",
        "/1.0/cluster",
        br#"{"server_name":"","enabled":false}"#,
    );
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["metadata"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (_, op) = get(&d1, &format!("/1.0/operations/{id}/wait?timeout=30"));
    assert!(
        op["metadata"]["err"]
            .as_str()
            .is_some_and(|e| e.contains("n2")),
        "{op}"
    );
}
