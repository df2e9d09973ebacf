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

/// `joiner` joins `member`'s cluster as `name`, with a token `member` makes for it.
fn join(member: &TestDaemon, joiner: &TestDaemon, name: &str) {
    let token = token_of(&member.hutch_ok(&["cluster", "add", name]));
    joiner.hutch_ok(&["cluster", "join", &token]);
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
    // One cluster certificate, as LXD's: n2 presents n1's from then on (a client that
    // trusts one member trusts them all).
    let cluster_fingerprint =
        get(&d1, "/1.0").1["metadata"]["environment"]["certificate_fingerprint"].clone();
    assert_eq!(
        get(&d2, "/1.0").1["metadata"]["environment"]["certificate_fingerprint"],
        cluster_fingerprint
    );
    for url in [&url1, &url2] {
        assert_eq!(presented_fingerprint(url), cluster_fingerprint, "{url}");
    }
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

/// Three members, one image imported once on the first.
fn three_members(etcd: &Etcd) -> [TestDaemon; 3] {
    let daemons = [
        TestDaemon::start_with(&["--storage-backend", "dir"]),
        TestDaemon::start_with(&["--storage-backend", "dir"]),
        TestDaemon::start_with(&["--storage-backend", "dir"]),
    ];
    for d in &daemons {
        d.enable_https();
    }
    daemons[0].hutch_ok(&["config", "set", "cluster.offline_threshold", "3"]);
    daemons[0].hutch_ok(&["cluster", "enable", "n1", "--etcd", &etcd.url()]);
    for (d, name) in [(&daemons[1], "n2"), (&daemons[2], "n3")] {
        join(&daemons[0], d, name);
    }
    for name in ["n2", "n3"] {
        wait_until(&format!("{name} online on n1"), LIMIT, || {
            get(&daemons[0], &format!("/1.0/cluster/members/{name}")).1["metadata"]["status"]
                == "Online"
        });
    }
    daemons[0].import_busybox(Via::Hutch);
    daemons
}

/// `NAME,STATUS,LOCATION` lines of `lxc list` on `d`.
fn locations(d: &TestDaemon) -> String {
    d.lxc_ok(&["list", "--format", "csv", "-c", "nsL"])
}

#[test]
fn instances_are_placed_forwarded_and_listed_across_members() {
    let test = "instances_are_placed_forwarded_and_listed_across_members";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let scratch = hutch_tests::TestDir::new();
    let etcd = Etcd::start(scratch.path());
    let [d1, mut d2, d3] = three_members(&etcd);

    // A target: made on n2 from n1's image (pulled member to member), through n1's API.
    d1.hutch_ok(&["launch", "bb", "c2", "--target", "n2"]);
    let (_, on_n2) = get(&d2, "/1.0/instances/c2");
    assert_eq!(on_n2["metadata"]["location"], "n2", "{on_n2}");
    // Without one: the member with the fewest (this one on a tie), then n3.
    d1.hutch_ok(&["launch", "bb", "c1"]);
    d1.hutch_ok(&["launch", "bb", "c3"]);
    let expected = "c1,RUNNING,n1\nc2,RUNNING,n2\nc3,RUNNING,n3\n";
    for d in [&d1, &d2, &d3] {
        assert_eq!(locations(d), expected);
    }
    let list = d1.hutch_ok(&["list", "--format", "csv", "-c", "nL"]);
    assert_eq!(list, "c1,n1\nc2,n2\nc3,n3\n");
    // LXD's client places one the same way.
    d1.lxc_ok(&["launch", "bb", "c5", "--target", "n3"]);
    assert!(locations(&d2).contains("c5,RUNNING,n3"));
    d2.lxc_ok(&["delete", "c5", "--force"]);
    // Operations are the cluster's too: one run by n3 (asked of it directly) is listed,
    // and read, through n1.
    d3.hutch_ok(&["snapshot", "c3", "s0"]);
    let (_, ops) = get(&d1, "/1.0/operations?recursion=1");
    let of_n3: Vec<&Value> = ops["metadata"]
        .as_object()
        .into_iter()
        .flat_map(|by_status| by_status.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter(|op| op["location"] == "n3")
        .collect();
    assert!(!of_n3.is_empty(), "{ops}");
    let id = of_n3[0]["id"].as_str().unwrap_or_default();
    let (status, op) = get(&d1, &format!("/1.0/operations/{id}"));
    assert_eq!(
        (status, &op["metadata"]["location"]),
        (200, &"n3".into()),
        "{op}"
    );
    // What is each member's own is answered by the target named (LXD's ?target=).
    let (_, server) = get(&d1, "/1.0?target=n2");
    assert_eq!(server["metadata"]["environment"]["server_name"], "n2");
    let (status, _) = get(&d1, "/1.0/resources?target=nope");
    assert_eq!(status, 404);
    // A name is the cluster's: taken on n2, refused on n3.
    let err = d1.hutch_err(&["launch", "bb", "c2", "--target", "n3"]);
    assert!(
        err.contains("already exists on cluster member \"n2\""),
        "{err}"
    );
    let err = d1.hutch_err(&["launch", "bb", "c9", "--target", "nope"]);
    assert!(err.contains("not found"), "{err}");

    // Exec, files and the console of an instance on n2, through n1.
    assert_eq!(d1.hutch_ok(&["exec", "c2", "--", "hostname"]).trim(), "c2");
    assert_eq!(d1.lxc_ok(&["exec", "c2", "--", "hostname"]).trim(), "c2");
    let local = scratch.path().join("pushed");
    std::fs::write(&local, "across the cluster\n").unwrap();
    d1.hutch_ok(&["file", "push", local.to_str().unwrap(), "c2/root/pushed"]);
    assert_eq!(
        d2.hutch_ok(&["exec", "c2", "--", "cat", "/root/pushed"]),
        "across the cluster\n"
    );
    assert_eq!(
        d1.lxc_ok(&["file", "pull", "c2/root/pushed", "-"]),
        "across the cluster\n"
    );
    let conf = d1.path().join("lxc-conf");
    let env = [
        ("LXD_DIR", d1.path().as_os_str()),
        ("LXD_CONF", conf.as_os_str()),
        ("HOME", d1.path().as_os_str()),
    ];
    let mut term = hutch_tests::TerminalSession::start("lxc console c2", &env);
    term.wait_for("FROM-N2", |seen| {
        if seen.contains("detach") {
            d2.hutch_ok(&[
                "exec",
                "c2",
                "--",
                "sh",
                "-c",
                "echo FROM-N2 > /dev/console",
            ]);
        }
    });
    term.type_keys(&[b"\x01", b"q"]);
    assert!(term.wait().success(), "lxc console did not detach");

    // n2 killed: shown Offline, its instance an error (never stopped), the rest writable.
    d2.kill();
    wait_until("n2 offline on n1", LIMIT, || {
        get(&d1, "/1.0/cluster/members/n2").1["metadata"]["status"] == "Offline"
    });
    assert_eq!(
        locations(&d1),
        "c1,RUNNING,n1\nc2,ERROR,n2\nc3,RUNNING,n3\n"
    );
    let err = d1.hutch_err(&["exec", "c2", "--", "true"]);
    assert!(err.contains("offline"), "{err}");
    d1.hutch_ok(&["launch", "bb", "c4", "--target", "n3"]);
    d1.hutch_ok(&["delete", "c4", "--force"]);
    d2.spawn();
    wait_until("n2 online again on n1", LIMIT, || {
        get(&d1, "/1.0/cluster/members/n2").1["metadata"]["status"] == "Online"
    });
    wait_until("c2 listed running again", LIMIT, || {
        locations(&d1).contains("c2,RUNNING,n2")
    });

    // Removing a member: not while it has instances; an online one removes itself.
    let err = d1.hutch_err(&["cluster", "remove", "n3"]);
    assert!(err.contains("still has instances: c3"), "{err}");
    d1.hutch_ok(&["delete", "c3", "--force"]);
    d1.lxc_ok(&["cluster", "remove", "n3"]);
    let members = d1.hutch_ok(&["cluster", "list", "--format", "csv"]);
    assert!(!members.contains("n3,"), "{members}");
    assert_eq!(get(&d3, "/1.0/cluster").1["metadata"]["enabled"], false);
    for name in ["c1", "c2"] {
        d1.hutch_ok(&["delete", name, "--force"]);
    }
    let keys = etcd.keys("/hutch/clusters/");
    assert!(!keys.iter().any(|k| k.contains("/instances/")), "{keys:?}");
}

#[test]
fn writes_are_refused_without_an_etcd_quorum_and_come_back_with_it() {
    let test = "writes_are_refused_without_an_etcd_quorum_and_come_back_with_it";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let scratch = hutch_tests::TestDir::new();
    let mut etcd = Etcd::start_cluster(scratch.path(), 3);
    let d1 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let mut d2 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d1.enable_https();
    d2.enable_https();
    d1.hutch_ok(&["config", "set", "cluster.offline_threshold", "3"]);
    d1.hutch_ok(&["cluster", "enable", "n1", "--etcd", &Etcd::urls(&etcd)]);
    join(&d1, &d2, "n2");
    d1.import_busybox(Via::Hutch);
    d1.hutch_ok(&["launch", "bb", "c1", "--target", "n1"]);

    // One member's hutchd and etcd killed: the others go on writing.
    d2.kill();
    etcd[1].kill();
    wait_until("n2 offline on n1", LIMIT, || {
        get(&d1, "/1.0/cluster/members/n2").1["metadata"]["status"] == "Offline"
    });
    d1.hutch_ok(&["launch", "bb", "c2"]);
    assert_eq!(locations(&d1), "c1,RUNNING,n1\nc2,RUNNING,n1\n");

    // A second etcd member gone: no quorum. Writes are refused, saying why; reads of
    // this member's own instances and the instances themselves go on.
    etcd[2].kill();
    let err = d1.hutch_err(&["launch", "bb", "c3"]);
    assert!(err.contains("etcd"), "{err}");
    let (status, body) = d1.http(
        "POST",
        "/1.0/instances",
        br#"{"name":"c3","source":{"type":"image","alias":"bb"}}"#,
    );
    assert_eq!(status, 503, "{body}");
    // A network made here first is taken down again when etcd cannot record it.
    let bridge = hutch_tests::unique_name("hq");
    let err = d1.hutch_err(&["network", "create", &bridge, "ipv6.address=none"]);
    assert!(err.contains("etcd"), "{err}");
    assert_eq!(get(&d1, &format!("/1.0/networks/{bridge}")).0, 404);
    assert!(!hutch_tests::network::link_exists(&bridge));
    assert_eq!(
        d1.hutch_ok(&["list", "--format", "csv", "-c", "ns"]),
        "c1,RUNNING\nc2,RUNNING\n"
    );
    assert_eq!(d1.hutch_ok(&["exec", "c1", "--", "hostname"]).trim(), "c1");
    assert_eq!(get(&d1, "/1.0/instances/c1").0, 200);

    // Quorum back: writes again, and the member that was away takes its place again.
    etcd[1].restart();
    etcd[2].restart();
    d2.spawn();
    wait_until("n2 online again", LIMIT, || {
        get(&d1, "/1.0/cluster/members/n2").1["metadata"]["status"] == "Online"
    });
    d1.hutch_ok(&["launch", "bb", "c3", "--target", "n2"]);
    assert_eq!(
        locations(&d2),
        "c1,RUNNING,n1\nc2,RUNNING,n1\nc3,RUNNING,n2\n"
    );
    for name in ["c1", "c2", "c3"] {
        d1.hutch_ok(&["delete", name, "--force"]);
    }
}

#[test]
fn an_evacuated_members_instances_move_away_and_come_back() {
    let test = "an_evacuated_members_instances_move_away_and_come_back";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let scratch = hutch_tests::TestDir::new();
    let etcd = Etcd::start(scratch.path());
    let [d1, d2, d3] = three_members(&etcd);
    d1.hutch_ok(&["launch", "bb", "c1", "--target", "n2"]);
    d1.hutch_ok(&["init", "bb", "c2", "--target", "n2"]);
    d1.hutch_ok(&["exec", "c1", "--", "sh", "-c", "echo kept > /root/data"]);

    // Evacuated with lxc's command: both leave n2 (one to each other member, the fewest
    // first), the running one running again, its files with it.
    d1.lxc_ok(&["cluster", "evacuate", "n2", "--force"]);
    let members = d1.lxc_ok(&["cluster", "list", "--format", "csv"]);
    assert!(
        members.contains("n2,") && members.contains("EVACUATED"),
        "{members}"
    );
    let list = locations(&d3);
    assert!(!list.contains(",n2"), "{list}");
    assert!(
        list.contains("c1,RUNNING,") && list.contains("c2,STOPPED,"),
        "{list}"
    );
    assert_eq!(
        d1.hutch_ok(&["exec", "c1", "--", "cat", "/root/data"]),
        "kept\n"
    );
    let (_, c1) = get(&d1, "/1.0/instances/c1");
    assert_eq!(c1["metadata"]["config"]["volatile.evacuate.origin"], "n2");
    // Nothing new is placed on it meanwhile.
    d1.hutch_ok(&["launch", "bb", "c3"]);
    assert!(!locations(&d1).contains("c3,RUNNING,n2"));
    let err = d1.hutch_err(&["cluster", "evacuate", "n2"]);
    assert!(err.contains("already evacuated"), "{err}");

    // Restored: both back on n2, as they were; the newcomer stays where it is.
    d1.hutch_ok(&["cluster", "restore", "n2"]);
    let list = locations(&d2);
    assert!(
        list.contains("c1,RUNNING,n2") && list.contains("c2,STOPPED,n2"),
        "{list}"
    );
    assert_eq!(
        d1.hutch_ok(&["exec", "c1", "--", "cat", "/root/data"]),
        "kept\n"
    );
    let (_, c1) = get(&d1, "/1.0/instances/c1");
    assert!(
        c1["metadata"]["config"]["volatile.evacuate.origin"].is_null(),
        "{c1}"
    );
    let members = d1.hutch_ok(&["cluster", "list", "--format", "csv"]);
    assert!(!members.contains("EVACUATED"), "{members}");

    // One instance moved by hand, as lxc moves it (stopped) and as hutch does (running).
    d3.hutch_ok(&["move", "c1", "--target", "n1"]);
    d1.lxc_ok(&["move", "c2", "--target", "n3"]);
    assert!(locations(&d1).contains("c2,STOPPED,n3"));
    assert!(locations(&d2).contains("c1,RUNNING,n1"));
    assert_eq!(
        d2.hutch_ok(&["exec", "c1", "--", "cat", "/root/data"]),
        "kept\n"
    );
    let err = d1.hutch_err(&["move", "c1", "--target", "n1"]);
    assert!(err.contains("already on cluster member"), "{err}");

    // Copied to another member (lxc's and hutch's --target; a snapshot too), its files
    // with it; without a target, a copy stays on its source's member.
    d2.hutch_ok(&["snapshot", "c1", "s1"]);
    d2.lxc_ok(&["copy", "c1", "c4", "--target", "n3"]);
    d3.hutch_ok(&["copy", "c1/s1", "c5", "--target", "n2"]);
    d2.hutch_ok(&["copy", "c1", "c6"]);
    let (status, body) = d1.http(
        "POST",
        "/1.0/instances?target=n3",
        br#"{"name":"c9","source":{"type":"copy","source":"c1/.."}}"#,
    );
    assert_eq!(status, 400, "{body}");
    let list = locations(&d1);
    for expected in [
        "c1,RUNNING,n1",
        "c4,STOPPED,n3",
        "c5,STOPPED,n2",
        "c6,STOPPED,n1",
    ] {
        assert!(list.contains(expected), "{expected}: {list}");
    }
    for name in ["c4", "c5"] {
        d1.hutch_ok(&["start", name]);
        assert_eq!(
            d1.hutch_ok(&["exec", name, "--", "cat", "/root/data"]),
            "kept\n"
        );
    }
    let (_, c4) = get(&d1, "/1.0/instances/c4");
    let (_, c1) = get(&d1, "/1.0/instances/c1");
    assert_eq!(c4["metadata"]["profiles"], c1["metadata"]["profiles"]);
    for name in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        d1.hutch_ok(&["delete", name, "--force"]);
    }
}

/// The profile names `d` lists.
fn profile_names(d: &TestDaemon) -> Vec<String> {
    let (_, v) = get(d, "/1.0/profiles");
    let mut names: Vec<String> = v["metadata"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str()?.rsplit('/').next().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn profiles_are_the_clusters_and_follow_every_change() {
    let test = "profiles_are_the_clusters_and_follow_every_change";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let scratch = hutch_tests::TestDir::new();
    let etcd = Etcd::start(scratch.path());
    let d1 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let d2 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d1.enable_https();
    d2.enable_https();
    // The first member's profiles become the cluster's; a joiner's own give way.
    d1.hutch_ok(&["profile", "create", "web"]);
    d1.hutch_ok(&["profile", "set", "web", "user.role", "frontend"]);
    d2.hutch_ok(&["profile", "create", "stray"]);
    d1.hutch_ok(&["cluster", "enable", "n1", "--etcd", &etcd.url()]);
    join(&d1, &d2, "n2");
    wait_until("the cluster's profiles on n2", LIMIT, || {
        profile_names(&d2) == ["default", "web"]
    });
    assert_eq!(
        d2.hutch_ok(&["profile", "get", "web", "user.role"]).trim(),
        "frontend"
    );

    // Made on n2, used on n1; changed on n2, the instance on n1 follows.
    d2.lxc_ok(&["profile", "create", "p1"]);
    wait_until("p1 on n1", LIMIT, || {
        profile_names(&d1).contains(&"p1".into())
    });
    d1.import_busybox(Via::Hutch);
    d1.hutch_ok(&[
        "launch", "bb", "c1", "--target", "n1", "-p", "default", "-p", "p1",
    ]);
    // The image is n1's alone: a launch on n2 through n2's own API pulls it from n1, the
    // next finds it there.
    d2.hutch_ok(&["launch", "bb", "c7", "--target", "n2"]);
    d2.hutch_ok(&["launch", "bb", "c8", "--target", "n2"]);
    assert!(locations(&d2).contains("c8,RUNNING,n2"));
    let (_, images) = get(&d2, "/1.0/images");
    assert_eq!(
        images["metadata"].as_array().map(Vec::len),
        Some(1),
        "{images}"
    );
    // The cluster's images and aliases, listed by any member (each once).
    let listed = d2.lxc_ok(&["image", "list", "--format", "csv", "-c", "l"]);
    assert_eq!(listed.trim(), "bb");
    // Changes are the cluster's, made on each member's copy: an alias renamed through
    // n2 and one made through n1 are all that any member lists; an image deleted
    // through n1 is gone from n2 too.
    d2.lxc_ok(&["image", "alias", "rename", "bb", "bb3"]);
    let (_, alias) = get(&d1, "/1.0/images/aliases/bb3");
    let fingerprint = alias["metadata"]["target"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    d1.lxc_ok(&["image", "alias", "create", "bb4", &fingerprint]);
    for d in [&d1, &d2] {
        let aliases = d.lxc_ok(&["image", "alias", "list", "--format", "csv"]);
        let names: Vec<&str> = aliases
            .lines()
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_eq!(names, ["bb3", "bb4"], "{aliases}");
    }
    d2.hutch_ok(&["delete", "c7", "c8", "--force"]);
    d1.lxc_ok(&["image", "delete", "bb3"]);
    for d in [&d1, &d2] {
        assert_eq!(get(d, "/1.0/images").1["metadata"], serde_json::json!([]));
    }
    d2.lxc_ok(&["profile", "set", "p1", "user.tier", "gold"]);
    wait_until("the change on n1's instance", LIMIT, || {
        get(&d1, "/1.0/instances/c1").1["metadata"]["expanded_config"]["user.tier"] == "gold"
    });
    // A name is the cluster's.
    let err = d1.hutch_err(&["profile", "create", "p1"]);
    assert!(err.contains("already exists"), "{err}");
    // Renamed on n1: the instance's reference follows, n2 sees the new name.
    d1.hutch_ok(&["profile", "rename", "p1", "p2"]);
    wait_until("p2 on n2", LIMIT, || {
        profile_names(&d2) == ["default", "p2", "web"]
    });
    let (_, c1) = get(&d2, "/1.0/instances/c1");
    assert_eq!(
        c1["metadata"]["profiles"],
        serde_json::json!(["default", "p2"])
    );
    // In use on n1: n2 cannot delete it; once unused, deleted everywhere.
    let err = d2.hutch_err(&["profile", "delete", "p2"]);
    assert!(err.contains("in use"), "{err}");
    d1.hutch_ok(&["delete", "c1", "--force"]);
    d2.hutch_ok(&["profile", "delete", "p2"]);
    wait_until("p2 gone on n1", LIMIT, || {
        profile_names(&d1) == ["default", "web"]
    });
}

#[test]
fn a_client_trusted_by_one_member_is_trusted_by_all() {
    let test = "a_client_trusted_by_one_member_is_trusted_by_all";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let scratch = hutch_tests::TestDir::new();
    let etcd = Etcd::start(scratch.path());
    let d1 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let d2 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d1.enable_https();
    let url2 = d2.enable_https();
    d1.hutch_ok(&["cluster", "enable", "n1", "--etcd", &etcd.url()]);
    join(&d1, &d2, "n2");

    // Trusted through n1 with a token: n2 trusts the same certificate.
    let h = hutch_tests::HutchClient::new();
    let token = token_of(&d1.hutch_ok(&["config", "trust", "add", "--name", "ci"]));
    h.ok(&["remote", "add", "one", &token]);
    wait_until("n2 trusts the client", LIMIT, || {
        d2.hutch_ok(&["config", "trust", "list", "--format", "csv"])
            .contains("ci,")
    });
    h.ok(&["remote", "add", "two", &url2, "--accept-certificate"]);
    assert_eq!(h.ok(&["list", "two:", "--format", "csv"]), "");
    // Removed on n2: n1 no longer trusts it either.
    let (_, certs) = get(&d2, "/1.0/certificates?recursion=1");
    let fingerprint = certs["metadata"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "ci")
        .and_then(|c| c["fingerprint"].as_str())
        .expect("the client's certificate on n2")
        .to_string();
    d2.hutch_ok(&["config", "trust", "remove", &fingerprint]);
    wait_until("n1 no longer trusts the client", LIMIT, || {
        !h.run(&["list", "one:"], b"").status.success()
    });

    // The server keys that are the cluster's are set once: a trust password set on n1
    // admits a client through n2; where each member listens stays its own.
    d1.lxc_ok(&["config", "set", "core.trust_password", "s3cret"]);
    d2.lxc_ok(&["config", "set", "images.auto_update_interval", "0"]);
    let config = |d: &TestDaemon| get(d, "/1.0").1["metadata"]["config"].clone();
    wait_until("the cluster's keys on both", LIMIT, || {
        [&d1, &d2].iter().all(|d| {
            let c = config(d);
            c["core.trust_password"] == true && c["images.auto_update_interval"] == "0"
        })
    });
    assert_ne!(
        config(&d1)["core.https_address"],
        config(&d2)["core.https_address"]
    );
    let h2 = hutch_tests::HutchClient::new();
    h2.ok(&[
        "remote",
        "add",
        "two",
        &url2,
        "--accept-certificate",
        "--password",
        "s3cret",
    ]);
    assert_eq!(h2.ok(&["list", "two:", "--format", "csv"]), "");
}

#[test]
fn members_on_hosts_of_their_own_go_on_when_one_host_dies() {
    let test = "members_on_hosts_of_their_own_go_on_when_one_host_dies";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    // Three "hosts": each hutchd in a network namespace of its own on the test's bridge,
    // an etcd member for each on the bridge's host address.
    let net = hutch_tests::network::TestNet::new(3);
    let scratch = hutch_tests::TestDir::new();
    let mut etcd = Etcd::start_cluster_on(scratch.path(), 3, &net.host_address());
    let (mut daemons, urls) = members_on_hosts(&net, &etcd);
    let d1 = &daemons[0];
    let members = d1.lxc_ok(&["cluster", "list", "--format", "csv"]);
    for url in &urls {
        assert!(members.contains(url.as_str()), "{members}");
    }
    d1.import_busybox(Via::Hutch);
    d1.hutch_ok(&["launch", "bb", "c2", "--target", "n2"]);
    d1.hutch_ok(&["launch", "bb", "c3", "--target", "n3"]);
    assert_eq!(d1.lxc_ok(&["exec", "c3", "--", "hostname"]).trim(), "c3");

    // Host n2 dies: its hutchd and its etcd member killed.
    daemons[1].kill();
    etcd[1].kill();
    let d1 = &daemons[0];
    wait_until("n2 offline on n1", LIMIT, || {
        get(d1, "/1.0/cluster/members/n2").1["metadata"]["status"] == "Offline"
    });
    d1.hutch_ok(&["launch", "bb", "c4"]);
    let list = locations(d1);
    assert!(
        list.contains("c2,ERROR,n2") && list.contains("c3,RUNNING,n3"),
        "{list}"
    );
    assert!(!list.contains("c4,RUNNING,n2"), "{list}");
    // Back: the same member again.
    etcd[1].restart();
    daemons[1].spawn();
    let d1 = &daemons[0];
    wait_until("n2 online again", LIMIT, || {
        get(d1, "/1.0/cluster/members/n2").1["metadata"]["status"] == "Online"
    });
    wait_until("c2 running again", LIMIT, || {
        locations(d1).contains("c2,RUNNING,n2")
    });
    for name in ["c2", "c3", "c4"] {
        d1.hutch_ok(&["delete", name, "--force"]);
    }
    drop(daemons);
    drop(etcd);
    drop(net);
}

/// One hutchd in each of `net`'s namespaces ("hosts"), formed into a cluster `n1`, `n2`, …
/// on `etcd`, all online; with the URL each listens on.
fn members_on_hosts(
    net: &hutch_tests::network::TestNet,
    etcd: &[Etcd],
) -> (Vec<TestDaemon>, Vec<String>) {
    let n = net.namespaces.len();
    let daemons: Vec<TestDaemon> = (0..n)
        .map(|i| TestDaemon::start_in_netns(net.netns(i)))
        .collect();
    let urls: Vec<String> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| d.enable_https_on(&net.address(i), 8443))
        .collect();
    daemons[0].hutch_ok(&["config", "set", "cluster.offline_threshold", "3"]);
    daemons[0].hutch_ok(&["cluster", "enable", "n1", "--etcd", &Etcd::urls(etcd)]);
    for (i, d) in daemons.iter().enumerate().skip(1) {
        let name = format!("n{}", i + 1);
        join(&daemons[0], d, &name);
    }
    wait_until("every member online", LIMIT, || {
        daemons[0]
            .lxc_ok(&["cluster", "list", "--format", "csv"])
            .matches("ONLINE")
            .count()
            == n
    });
    (daemons, urls)
}

/// `ip -n <netns> -br addr show <link>` in member `i`'s namespace: empty when the link is
/// not there.
fn link_in(net: &hutch_tests::network::TestNet, i: usize, link: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", net.netns(i), "-br", "addr", "show", link])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The config of network `name` as member `d` has it (null when it has none).
fn network_config(d: &TestDaemon, name: &str) -> Value {
    get(d, &format!("/1.0/networks/{name}")).1["metadata"]["config"].clone()
}

#[test]
fn networks_are_the_clusters_on_every_member() {
    let test = "networks_are_the_clusters_on_every_member";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let net = hutch_tests::network::TestNet::new(2);
    let scratch = hutch_tests::TestDir::new();
    let etcd = Etcd::start_cluster_on(scratch.path(), 1, &net.host_address());
    let (daemons, _) = members_on_hosts(&net, &etcd);
    let (d1, d2) = (&daemons[0], &daemons[1]);

    // Made once, through n1 with lxc: the bridge is up on both hosts with the subnet n1
    // chose for `auto`.
    d1.lxc_ok(&[
        "network",
        "create",
        "hnet0",
        "ipv4.address=auto",
        "ipv4.nat=true",
        "ipv6.address=none",
    ]);
    let config = network_config(d1, "hnet0");
    let address = config["ipv4.address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(address.contains('/'), "{config}");
    wait_until("hnet0 on n2", LIMIT, || {
        network_config(d2, "hnet0") == config
    });
    let gateway = address.split('/').next().unwrap_or_default();
    for i in 0..2 {
        let link = link_in(&net, i, "hnet0");
        assert!(link.contains(gateway), "member {i}: {link}");
    }
    assert!(d2
        .lxc_ok(&["network", "list", "--format", "csv"])
        .contains("hnet0,bridge,YES"));

    // Changed through n2: n1 follows, its bridge too.
    d2.lxc_ok(&["network", "set", "hnet0", "ipv4.address", "10.201.77.1/24"]);
    wait_until("n1 follows n2's change", LIMIT, || {
        link_in(&net, 0, "hnet0").contains("10.201.77.1/24")
    });
    assert_eq!(network_config(d1, "hnet0"), network_config(d2, "hnet0"));

    // In use by an instance on n2: neither deleted nor renamed through n1.
    d1.import_busybox(Via::Hutch);
    d1.hutch_ok(&["init", "bb", "c1", "--target", "n2"]);
    d1.hutch_ok(&[
        "config",
        "device",
        "add",
        "c1",
        "eth0",
        "nic",
        "network=hnet0",
    ]);
    d1.hutch_ok(&["start", "c1"]);
    let err = d1.lxc_err(&["network", "delete", "hnet0"]);
    assert!(err.contains("in use on cluster member \"n2\""), "{err}");
    let err = d1.hutch_err(&["network", "rename", "hnet0", "hnet1"]);
    assert!(err.contains("in use"), "{err}");
    assert!(!link_in(&net, 0, "hnet0").is_empty());
    d1.hutch_ok(&["delete", "c1", "--force"]);

    // Renamed through n1, then deleted through n2: on both hosts.
    d1.lxc_ok(&["network", "rename", "hnet0", "hnet1"]);
    wait_until("n2 renames it", LIMIT, || {
        !link_in(&net, 1, "hnet1").is_empty() && link_in(&net, 1, "hnet0").is_empty()
    });
    d2.lxc_ok(&["network", "delete", "hnet1"]);
    wait_until("n1 deletes it", LIMIT, || {
        get(d1, "/1.0/networks/hnet1").0 == 404
    });
    assert!(link_in(&net, 0, "hnet1").is_empty());

    // LXD's two steps (each member, then the cluster) make it once; a member-specific key
    // hutch does not have is refused, saying why.
    d1.lxc_ok(&["network", "create", "hnet2", "--target", "n1"]);
    d1.lxc_ok(&["network", "create", "hnet2", "--target", "n2"]);
    assert_eq!(get(d1, "/1.0/networks/hnet2").0, 404);
    d1.lxc_ok(&["network", "create", "hnet2", "ipv6.address=none"]);
    wait_until("hnet2 on n2", LIMIT, || {
        !link_in(&net, 1, "hnet2").is_empty()
    });
    let err = d1.lxc_err(&[
        "network",
        "create",
        "hnet3",
        "--target",
        "n2",
        "ipv4.nat=true",
    ]);
    assert!(err.contains("member-specific"), "{err}");
    d1.lxc_ok(&["network", "delete", "hnet2"]);
    wait_until("hnet2 gone from n2", LIMIT, || {
        link_in(&net, 1, "hnet2").is_empty()
    });
}

#[test]
fn storage_pools_are_the_clusters_on_every_member() {
    let test = "storage_pools_are_the_clusters_on_every_member";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let scratch = hutch_tests::TestDir::new();
    let etcd = Etcd::start(scratch.path());
    let d1 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let d2 = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d1.enable_https();
    d2.enable_https();
    d1.hutch_ok(&["cluster", "enable", "n1", "--etcd", &etcd.url()]);
    join(&d1, &d2, "n2");
    let pool = |d: &TestDaemon, name: &str| get(d, &format!("/1.0/storage-pools/{name}"));

    // Made once through n1 with lxc: each member makes its own backing store.
    d1.lxc_ok(&["storage", "create", "p1", "dir", "user.tier=gold"]);
    wait_until("p1 on n2", LIMIT, || pool(&d2, "p1").0 == 200);
    let source = |d: &TestDaemon| {
        pool(d, "p1").1["metadata"]["config"]["source"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        source(&d2).starts_with(d2.path().to_str().unwrap()),
        "{}",
        source(&d2)
    );
    assert_ne!(source(&d1), source(&d2));
    assert_eq!(pool(&d2, "p1").1["metadata"]["config"]["user.tier"], "gold");

    // Changed through n2: n1 follows; a key fixed at create stays refused.
    d2.lxc_ok(&["storage", "set", "p1", "user.tier", "silver"]);
    let (status, body) = d2.http(
        "PATCH",
        "/1.0/storage-pools/p1",
        br#"{"description":"shared"}"#,
    );
    assert_eq!(status, 200, "{body}");
    wait_until("n1 follows", LIMIT, || {
        let (_, p) = pool(&d1, "p1");
        p["metadata"]["config"]["user.tier"] == "silver" && p["metadata"]["description"] == "shared"
    });
    let err = d2.hutch_err(&["storage", "set", "p1", "source", "/tmp"]);
    assert!(err.contains("cannot be changed"), "{err}");

    // Used on n2: not deleted through n1; once unused, deleted through n1 on both.
    d1.import_busybox(Via::Hutch);
    d1.hutch_ok(&["init", "bb", "c1", "--target", "n2", "-s", "p1"]);
    let err = d1.lxc_err(&["storage", "delete", "p1"]);
    assert!(err.contains("in use on cluster member \"n2\""), "{err}");
    d1.hutch_ok(&["delete", "c1"]);
    let n2_source = source(&d2);
    d1.lxc_ok(&["storage", "delete", "p1"]);
    wait_until("p1 gone from n2", LIMIT, || pool(&d2, "p1").0 == 404);
    assert!(!std::path::Path::new(&n2_source).exists(), "{n2_source}");

    // LXD's per-member step is accepted; a member-specific key is refused, saying why.
    d1.lxc_ok(&["storage", "create", "p2", "dir", "--target", "n2"]);
    assert_eq!(pool(&d1, "p2").0, 404);
    let err = d1.lxc_err(&[
        "storage",
        "create",
        "p2",
        "dir",
        "source=/srv/p2",
        "--target",
        "n2",
    ]);
    assert!(err.contains("member-specific"), "{err}");
    d1.lxc_ok(&["storage", "create", "p2", "dir"]);
    wait_until("p2 on n2", LIMIT, || pool(&d2, "p2").0 == 200);
    d2.lxc_ok(&["storage", "delete", "p2"]);
    wait_until("p2 gone from n1", LIMIT, || pool(&d1, "p2").0 == 404);
}

/// The sha256 fingerprint of the certificate the server at `url` (`https://host:port`)
/// presents, as openssl reads it.
fn presented_fingerprint(url: &str) -> Value {
    let address = url.trim_start_matches("https://");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {address} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().rsplit('=').next().unwrap_or_default();
    hex.replace(':', "").to_lowercase().into()
}

/// A test CA (`ca.crt`) and a certificate it signed for 127.0.0.1 (`etcd.crt`,
/// `etcd.key`), under `dir` (openssl).
fn test_ca_and_server_cert(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=hutch test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout", "etcd.key", "-out", "etcd.csr", "-subj", "/CN=etcd",
    ]);
    run(&csr);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san");
    run(&[
        "x509",
        "-req",
        "-in",
        "etcd.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "etcd.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[test]
fn members_reach_etcd_over_tls_with_the_cluster_certificate() {
    let test = "members_reach_etcd_over_tls_with_the_cluster_certificate";
    if !require_root(test) {
        return;
    }
    if let Some(why) = Etcd::missing() {
        skipped(test, why);
        return;
    }
    let scratch = hutch_tests::TestDir::new();
    test_ca_and_server_cert(scratch.path());
    // The daemons trust the test CA as a Go daemon would, from SSL_CERT_FILE.
    let ca = scratch.path().join("ca.crt");
    let env = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let d1 = TestDaemon::start_with_env(&["--storage-backend", "dir"], &env);
    let d2 = TestDaemon::start_with_env(&["--storage-backend", "dir"], &env);
    d1.enable_https();
    d2.enable_https();
    // etcd admits the cluster's certificate (n1's, which n2 takes when it joins) alone.
    let etcd = Etcd::start_tls(
        scratch.path(),
        &scratch.path().join("etcd.crt"),
        &scratch.path().join("etcd.key"),
        &d1.path().join("server.crt"),
    );
    assert!(etcd.url().starts_with("https://"), "{}", etcd.url());
    d1.hutch_ok(&["cluster", "enable", "n1", "--etcd", &etcd.url()]);
    join(&d1, &d2, "n2");
    wait_until("both online", LIMIT, || {
        d1.lxc_ok(&["cluster", "list", "--format", "csv"])
            .matches("ONLINE")
            .count()
            == 2
    });
    // Writes through the joiner reach etcd (and so the other member).
    d2.hutch_ok(&["profile", "create", "over-tls"]);
    wait_until("the profile on n1", LIMIT, || {
        get(&d1, "/1.0/profiles/over-tls").0 == 200
    });
    // A client without the cluster's certificate gets nothing from etcd; with it, it does.
    let range = |client: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", ca.to_str().unwrap()])
            .args(client)
            .args(["-X", "POST", "-d", r#"{"key":"AA=="}"#])
            .arg(format!("{}/v3/kv/range", etcd.url()))
            .output()
            .expect("run curl")
    };
    let out = range(&[]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // (The TLS handshake is what is checked: etcd 3.4's JSON gateway, behind it, may not
    // reach its own gRPC under client-cert-auth, and answers that as JSON.)
    let (cert, key) = (d1.path().join("server.crt"), d1.path().join("server.key"));
    let out = range(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success() && out.stdout.starts_with(b"{"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
