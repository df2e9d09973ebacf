//! Network lifecycle over fake runners: what each change leaves on the "host", that a
//! failure at any step leaves what was there before, and the order of a teardown.

use std::collections::BTreeMap;

use hutch_api::network::{NetworkPatch, NetworkPost, NetworkPut, NetworksPost};
use hutch_api::profile::ProfilePut;
use hutch_network::{Netlink, Nft, ProcessCall};

use super::start_networks;
use crate::db::intents::IntentKind;
use crate::engine::net_state::fakes::NetFakes;
use crate::engine::Engine;
use crate::error::DaemonError;

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn post(name: &str) -> NetworksPost {
    NetworksPost {
        name: name.into(),
        kind: "bridge".into(),
        put: NetworkPut {
            config: config(&[("ipv4.address", "10.71.0.1/24"), ("ipv4.nat", "true")]),
            description: String::new(),
        },
    }
}

fn setup() -> (Engine, NetFakes, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let f = NetFakes::new();
    (f.engine(dir.path()), f, dir)
}

/// Nothing of network `name`: no row, no intent, no link, table, process or file.
fn assert_gone(e: &Engine, f: &NetFakes, name: &str) {
    assert!(e.d.db.network(name).unwrap().is_none(), "row of {name}");
    assert!(e.d.db.intents().unwrap().is_empty(), "intents");
    assert_eq!(f.netlink.host_links(), ["lo"], "links");
    assert!(f.nft.table_names().is_empty(), "tables");
    assert!(f.processes.live().is_empty(), "processes");
    assert!(!e.d.dir.join("networks").join(name).exists(), "files");
}

/// Network `name` whole: its row, its bridge with `addr`, its table, its dnsmasq.
fn assert_up(e: &Engine, f: &NetFakes, name: &str, addr: &str) {
    assert!(e.d.db.network(name).unwrap().is_some(), "row of {name}");
    assert!(f.netlink.host_links().contains(&name.to_string()), "link");
    let (ip, prefix) = addr.split_once('/').unwrap();
    assert_eq!(
        f.netlink.host_addresses(name),
        [(ip.parse().unwrap(), prefix.parse().unwrap())]
    );
    assert_eq!(f.nft.table_names(), [super::table(&e.d, name)]);
    let live = f.processes.live();
    assert!(
        matches!(&live[..], [ProcessCall::SpawnDnsmasq { bridge, .. }] if bridge == name),
        "{live:?}"
    );
    assert!(e.d.db.intents().unwrap().is_empty(), "intents");
}

#[tokio::test]
async fn create_brings_up_bridge_rules_and_dnsmasq() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    assert_up(&e, &f, "hbr0", "10.71.0.1/24");
    let args = match &f.processes.live()[0] {
        ProcessCall::SpawnDnsmasq { args, .. } => args.clone(),
        other => panic!("{other:?}"),
    };
    assert!(args.contains(&"--interface=hbr0".to_string()));
    let err = e.create_network(post("hbr0")).await.unwrap_err();
    assert!(matches!(err, DaemonError::Conflict(_)), "{err}");
}

#[tokio::test]
async fn a_create_that_fails_at_any_netlink_call_leaves_nothing() {
    for n in 1.. {
        let (e, f, _dir) = setup();
        f.netlink.fail_call(n);
        match e.create_network(post("hbr0")).await {
            Err(_) => assert_gone(&e, &f, "hbr0"),
            Ok(()) => {
                assert!(n > 3, "the bridge's calls were failed first");
                assert_up(&e, &f, "hbr0", "10.71.0.1/24");
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_create_that_fails_at_nft_or_spawn_leaves_nothing() {
    let (e, f, _dir) = setup();
    f.nft.fail_call(1);
    e.create_network(post("hbr0")).await.unwrap_err();
    assert_gone(&e, &f, "hbr0");

    let (e, f, _dir) = setup();
    f.processes.fail_spawn(1);
    e.create_network(post("hbr0")).await.unwrap_err();
    assert_gone(&e, &f, "hbr0");
}

#[tokio::test]
async fn delete_stops_dnsmasq_then_removes_rules_then_the_bridge() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    let before = f.journal.entries().len();
    e.delete_network("hbr0").await.unwrap();
    let steps: Vec<String> = f.journal.entries()[before..]
        .iter()
        .filter(|s| !s.contains("FindDnsmasq") && !s.contains("netlink Link("))
        .cloned()
        .collect();
    let table = super::table(&e.d, "hbr0");
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(steps[0].starts_with("process Stop("), "{steps:?}");
    assert_eq!(steps[1], format!("nft delete {table}"));
    assert_eq!(steps[2], "netlink DeleteLink(\"hbr0\")");
    assert_gone(&e, &f, "hbr0");
    let err = e.delete_network("hbr0").await.unwrap_err();
    assert!(matches!(err, DaemonError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_delete_that_fails_brings_the_network_back() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    // The delete of the bridge itself.
    f.netlink.fail_call(1);
    e.delete_network("hbr0").await.unwrap_err();
    assert_up(&e, &f, "hbr0", "10.71.0.1/24");
}

#[tokio::test]
async fn a_delete_a_crash_interrupted_is_finished_at_start() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    e.d.db
        .record_intent(IntentKind::Network, "", "hbr0")
        .unwrap();
    start_networks(&e);
    assert_gone(&e, &f, "hbr0");
}

#[tokio::test]
async fn start_brings_networks_back_and_removes_stray_tables() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    let stray = hutch_network::nft::network_table(&e.d.net.scope, "gone");
    f.nft
        .apply(&format!("table inet {stray} {{\n}}\n"))
        .unwrap();
    f.netlink.delete_link("hbr0").unwrap();
    start_networks(&e);
    assert_up(&e, &f, "hbr0", "10.71.0.1/24");
}

#[tokio::test]
async fn start_restarts_a_dnsmasq_running_with_other_arguments() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    let spawns = |f: &NetFakes| {
        f.processes
            .calls()
            .iter()
            .filter(|c| matches!(c, ProcessCall::SpawnDnsmasq { .. }))
            .count()
    };
    // Its own arguments: adopted as it is.
    start_networks(&e);
    assert_eq!(spawns(&f), 1);
    // Started by an older hutchd without a lease limit: replaced by one with it.
    f.processes
        .drop_dnsmasq_arguments("hbr0", "--dhcp-lease-max");
    start_networks(&e);
    assert_eq!(spawns(&f), 2);
    assert_up(&e, &f, "hbr0", "10.71.0.1/24");
    let live = f.processes.live();
    assert!(
        matches!(&live[..], [ProcessCall::SpawnDnsmasq { args, .. }]
            if args.iter().any(|a| a.starts_with("--dhcp-lease-max="))),
        "{live:?}"
    );
}

#[tokio::test]
async fn an_update_that_fails_puts_the_old_network_back() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    let new = NetworkPut {
        config: config(&[("ipv4.address", "10.72.0.1/24")]),
        description: "new".into(),
    };
    f.processes.fail_spawn(1);
    e.update_network("hbr0", new.clone(), None)
        .await
        .unwrap_err();
    assert_up(&e, &f, "hbr0", "10.71.0.1/24");
    assert_eq!(e.d.db.network("hbr0").unwrap().unwrap().put.description, "");

    e.update_network("hbr0", new, None).await.unwrap();
    assert_up(&e, &f, "hbr0", "10.72.0.1/24");
    let refused = e
        .update_network("hbr0", NetworkPut::default(), Some("stale".into()))
        .await
        .unwrap_err();
    assert!(matches!(refused, DaemonError::PreconditionFailed { .. }));
    let patch = NetworkPatch {
        config: None,
        description: Some("patched".into()),
    };
    e.patch_network("hbr0", patch, None).await.unwrap();
    let row = e.d.db.network("hbr0").unwrap().unwrap();
    assert_eq!(row.put.description, "patched");
    assert_eq!(row.put.config["ipv4.address"], "10.72.0.1/24");
}

#[tokio::test]
async fn a_rename_that_fails_at_any_step_puts_the_old_network_back() {
    for n in 1.. {
        let (e, f, _dir) = setup();
        e.create_network(post("hbr0")).await.unwrap();
        f.netlink.fail_call(n);
        let to = NetworkPost {
            name: "hbr1".into(),
        };
        match e.rename_network("hbr0", to).await {
            Err(_) => {
                assert_up(&e, &f, "hbr0", "10.71.0.1/24");
                assert!(e.d.db.network("hbr1").unwrap().is_none());
            }
            Ok(()) => {
                assert_up(&e, &f, "hbr1", "10.71.0.1/24");
                assert!(e.d.db.network("hbr0").unwrap().is_none());
                assert!(!f.netlink.host_links().contains(&"hbr0".to_string()));
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_network_in_use_is_neither_deleted_nor_renamed() {
    let (e, f, _dir) = setup();
    e.create_network(post("hbr0")).await.unwrap();
    let mut put = ProfilePut::default();
    put.devices.insert(
        "eth0".into(),
        config(&[("type", "nic"), ("network", "hbr0")]),
    );
    e.d.db.insert_profile("p1", &put).unwrap();
    assert_eq!(e.network_users("hbr0").unwrap(), ["/1.0/profiles/p1"]);
    let err = e.delete_network("hbr0").await.unwrap_err();
    assert_eq!(err.to_string(), "The network is currently in use");
    let to = NetworkPost {
        name: "hbr1".into(),
    };
    let err = e.rename_network("hbr0", to).await.unwrap_err();
    assert_eq!(err.to_string(), "The network is currently in use");
    assert_up(&e, &f, "hbr0", "10.71.0.1/24");
}

#[tokio::test]
async fn auto_addresses_avoid_the_host_and_other_networks() {
    let (e, f, _dir) = setup();
    f.netlink
        .set_used_prefixes(vec!["10.71.0.0/16".parse().unwrap()], vec![]);
    let err = e.create_network(post("hbr0")).await.unwrap_err();
    assert!(
        err.to_string().contains("already in use on the host"),
        "{err}"
    );
    let mut auto = post("hbr1");
    auto.put.config = config(&[("ipv4.address", "auto")]);
    e.create_network(auto).await.unwrap();
    let cfg = e.network_config("hbr1").unwrap().unwrap();
    let v4 = cfg.ipv4.unwrap();
    assert!(!v4.overlaps(&"10.71.0.0/16".parse().unwrap()));
    assert!(cfg.ipv4_nat);
}
