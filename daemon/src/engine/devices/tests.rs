//! NIC and proxy devices over fake runners: the start plan, DHCP reservations, hot-plug and
//! unplug, and proxies that start all or none.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hutch_api::network::{NetworkPut, NetworksPost};
use hutch_api::profile::Devices;
use hutch_network::{ProcessCall, Processes};

use super::{apply_device_changes, forget_instance, start_hook, stop_proxies, validate_devices};
use crate::db::instances::InstanceRow;
use crate::engine::net_state::fakes::NetFakes;
use crate::engine::spec::{expand, Expanded};
use crate::engine::Engine;
use crate::error::DaemonError;

const PID: i32 = 42;

fn dev(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn devices(list: &[(&str, &[(&str, &str)])]) -> Devices {
    list.iter().map(|(n, d)| (n.to_string(), dev(d))).collect()
}

fn row(name: &str, devices: Devices) -> InstanceRow {
    InstanceRow {
        name: name.into(),
        kind: "container".into(),
        architecture: "x86_64".into(),
        ephemeral: false,
        stateful: false,
        description: String::new(),
        created_at: "now".into(),
        last_used_at: "now".into(),
        config: BTreeMap::new(),
        devices,
        profiles: Vec::new(),
        state: "ready".into(),
        pool: "default".into(),
    }
}

/// An engine with network `hbr0` (10.91.0.1/24) and instance `c1` with `devs`.
async fn setup(devs: Devices) -> (Engine, NetFakes, tempfile::TempDir, InstanceRow) {
    let dir = tempfile::tempdir().unwrap();
    let f = NetFakes::new();
    let e = f.engine(dir.path());
    let put = NetworkPut {
        config: dev(&[("ipv4.address", "10.91.0.1/24")]),
        description: String::new(),
    };
    e.create_network(NetworksPost {
        name: "hbr0".into(),
        kind: "bridge".into(),
        put,
    })
    .await
    .unwrap();
    let r = row("c1", devs);
    e.d.db.insert_instance(&r).unwrap();
    std::fs::create_dir_all(e.d.runtime_dir("c1")).unwrap();
    (e, f, dir, r)
}

fn expanded(e: &Engine, r: &InstanceRow) -> Expanded {
    expand(&e.d, r).unwrap()
}

fn netns() -> PathBuf {
    hutch_network::nic::netns_of(PID)
}

#[tokio::test]
async fn nics_are_checked_against_their_network() {
    let (e, _f, _dir, _) = setup(Devices::new()).await;
    let refused = |list: &[(&str, &[(&str, &str)])]| {
        validate_devices(&e, &devices(list))
            .unwrap_err()
            .to_string()
    };
    let nic = |extra: (&'static str, &'static str)| -> Vec<(&'static str, &'static str)> {
        vec![("type", "nic"), ("network", "hbr0"), extra]
    };
    validate_devices(
        &e,
        &devices(&[("eth0", &nic(("ipv4.address", "10.91.0.9")))]),
    )
    .unwrap();
    assert_eq!(
        refused(&[("eth0", &[("type", "nic"), ("network", "nope")])]),
        "Invalid device \"eth0\": network \"nope\" not found"
    );
    assert!(refused(&[("eth0", &nic(("ipv4.address", "10.92.0.9")))]).contains("not a free host"));
    assert!(refused(&[("eth0", &nic(("ipv4.address", "10.91.0.1")))]).contains("not a free host"));
    assert!(refused(&[("eth0", &nic(("mtu", "9")))]).contains("invalid mtu"));
    assert!(refused(&[("eth0", &nic(("hwaddr", "zz")))]).contains("MAC"));
    assert!(refused(&[("eth0", &nic(("nictype", "bridged")))]).contains("both"));
    assert!(refused(&[("eth0", &[("type", "nic"), ("nictype", "macvlan")])]).contains("parent"));
    assert!(refused(&[("eth0", &[("type", "nic")])]).contains("network or nictype"));
    let proxy = |listen: &'static str, extra: (&'static str, &'static str)| {
        vec![
            ("type", "proxy"),
            ("listen", listen),
            ("connect", "tcp:127.0.0.1:80"),
            extra,
        ]
    };
    assert!(refused(&[("p", &proxy("tcp:0.0.0.0:80", ("bind", "moon")))]).contains("bind"));
    assert!(refused(&[("p", &proxy("udp:0.0.0.0:80", ("bind", "host")))]).contains("protocols"));
    assert!(refused(&[("p", &proxy("tcp:127.0.0.1:80", ("nat", "true")))]).contains("loopback"));
}

#[tokio::test]
async fn start_writes_the_plan_and_reserves_the_address() {
    let eth0: &[(&str, &str)] = &[
        ("type", "nic"),
        ("network", "hbr0"),
        ("ipv4.address", "10.91.0.10"),
    ];
    let (e, _f, _dir, r) = setup(devices(&[("eth0", eth0)])).await;
    let hook = start_hook(&e, &r, &expanded(&e, &r)).unwrap().unwrap();
    assert_eq!(hook[1], "__nic-plug");
    let plan = hutch_network::nic::read_plan(std::path::Path::new(&hook[2])).unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].name, "eth0");
    let stored = e.d.db.instance("c1").unwrap().unwrap();
    assert_eq!(stored.config["volatile.eth0.hwaddr"], plan[0].hwaddr);
    assert!(stored.config.contains_key("volatile.eth0.host_name"));
    let leases = e.network_leases("hbr0").await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (leases[0].address.as_str(), leases[0].hostname.as_str()),
        ("10.91.0.10", "c1")
    );

    let r2 = row("c2", devices(&[("eth0", eth0)]));
    e.d.db.insert_instance(&r2).unwrap();
    let err = start_hook(&e, &r2, &expanded(&e, &r2)).unwrap_err();
    assert!(matches!(err, DaemonError::BadRequest(_)), "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");

    forget_instance(&e, "c1").unwrap();
    assert!(e.network_leases("hbr0").await.unwrap().is_empty());
    assert_eq!(
        e.network_users("hbr0").unwrap(),
        ["/1.0/instances/c1", "/1.0/instances/c2"]
    );
}

#[tokio::test]
async fn hot_plug_adds_and_removes_nics_and_proxies() {
    let (e, f, _dir, old_row) = setup(Devices::new()).await;
    let old = expanded(&e, &old_row);
    let new_row = row(
        "c1",
        devices(&[
            ("eth1", &[("type", "nic"), ("network", "hbr0")]),
            (
                "web",
                &[
                    ("type", "proxy"),
                    ("listen", "tcp:0.0.0.0:8080"),
                    ("connect", "tcp:127.0.0.1:80"),
                ],
            ),
        ]),
    );
    let new = expanded(&e, &new_row);
    apply_device_changes(&e, &new_row, PID, &old, &new)
        .await
        .unwrap();
    let inside: Vec<(String, bool)> = f
        .netlink
        .links_in(&netns())
        .into_iter()
        .map(|l| (l.name, l.up))
        .collect();
    assert!(inside.contains(&("eth1".into(), true)), "{inside:?}");
    let host_name =
        e.d.db.instance("c1").unwrap().unwrap().config["volatile.eth1.host_name"].clone();
    assert!(f.netlink.host_links().contains(&host_name));
    let live = f.processes.live();
    assert!(
        matches!(&live[..], [_, ProcessCall::SpawnProxy { device, spec }]
            if device == "web" && spec.instance_pid == PID && spec.listen == "tcp:0.0.0.0:8080"),
        "{live:?}"
    );
    assert!(e.d.runtime_dir("c1").join("proxies.json").exists());

    apply_device_changes(&e, &old_row, PID, &new, &old)
        .await
        .unwrap();
    assert!(!f.netlink.host_links().contains(&host_name));
    assert!(f.netlink.links_in(&netns()).iter().all(|l| l.name == "lo"));
    assert_eq!(f.processes.live().len(), 1, "only the dnsmasq");
    assert!(!e.d.runtime_dir("c1").join("proxies.json").exists());
}

#[tokio::test]
async fn proxies_start_all_or_none() {
    let (e, f, _dir, old_row) = setup(Devices::new()).await;
    let old = expanded(&e, &old_row);
    let p = |port: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("type", "proxy"),
            ("listen", port),
            ("connect", "tcp:127.0.0.1:80"),
        ]
    };
    let new_row = row(
        "c1",
        devices(&[("p1", &p("tcp:0.0.0.0:81")), ("p2", &p("tcp:0.0.0.0:82"))]),
    );
    let new = expanded(&e, &new_row);
    f.processes.fail_spawn(2);
    apply_device_changes(&e, &new_row, PID, &old, &new)
        .await
        .unwrap_err();
    assert_eq!(f.processes.live().len(), 1, "only the dnsmasq");

    // NAT needs a static address to send to.
    let nat_row = row(
        "c1",
        devices(&[(
            "p",
            &[
                ("type", "proxy"),
                ("listen", "tcp:10.0.0.1:80"),
                ("connect", "tcp:0.0.0.0:80"),
                ("nat", "true"),
            ],
        )]),
    );
    let nat = expanded(&e, &nat_row);
    let err = apply_device_changes(&e, &nat_row, PID, &old, &nat)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("static ipv4.address"), "{err}");
    assert_eq!(f.nft.table_names().len(), 1, "only the network's");
}

#[tokio::test]
async fn nat_proxies_are_one_table_removed_at_stop() {
    let (e, f, _dir, old_row) = setup(Devices::new()).await;
    let old = expanded(&e, &old_row);
    let new_row = row(
        "c1",
        devices(&[
            (
                "eth0",
                &[
                    ("type", "nic"),
                    ("network", "hbr0"),
                    ("ipv4.address", "10.91.0.10"),
                ],
            ),
            (
                "p",
                &[
                    ("type", "proxy"),
                    ("listen", "tcp:10.0.0.1:80"),
                    ("connect", "tcp:0.0.0.0:8080"),
                    ("nat", "true"),
                ],
            ),
        ]),
    );
    let new = expanded(&e, &new_row);
    apply_device_changes(&e, &new_row, PID, &old, &new)
        .await
        .unwrap();
    let table = hutch_network::nft::proxy_table(&e.d.net.scope, "c1");
    assert!(f.nft.table_names().contains(&table));
    let script = f.nft.scripts.lock().unwrap().last().cloned().unwrap();
    assert!(script.contains("dnat ip to 10.91.0.10:8080"), "{script}");
    stop_proxies(&e, "c1");
    assert!(!f.nft.table_names().contains(&table));
}

#[tokio::test]
async fn the_supervisor_stops_proxies_of_instances_that_stopped() {
    let (e, f, _dir, old_row) = setup(Devices::new()).await;
    let old = expanded(&e, &old_row);
    let new_row = row(
        "c1",
        devices(&[(
            "web",
            &[
                ("type", "proxy"),
                ("listen", "tcp:0.0.0.0:8080"),
                ("connect", "tcp:127.0.0.1:80"),
            ],
        )]),
    );
    let new = expanded(&e, &new_row);
    apply_device_changes(&e, &new_row, PID, &old, &new)
        .await
        .unwrap();
    assert_eq!(f.processes.live().len(), 2);
    // c1 has no monitor state: it is not running.
    e.stop_proxies_of_stopped();
    let live = f.processes.live();
    assert!(
        matches!(&live[..], [ProcessCall::SpawnDnsmasq { .. }]),
        "{live:?}"
    );
    let ids: Vec<_> = f
        .processes
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            ProcessCall::Stop(ids) => Some(ids),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(ids.iter().all(|id| !f.processes.alive(*id)));
}
