//! NICs: a veth pair with one end on a bridge, or a macvlan on a parent device, made
//! straight inside an instance's network namespace; and the instance's interfaces as seen
//! from inside.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::addr::parse_hwaddr;
use crate::error::{NetworkError, Result};
pub use crate::netlink::Interfaces;
use crate::netlink::{Netlink, PeerSpec};

/// How a NIC reaches the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "nictype", rename_all = "lowercase")]
pub enum NicKind {
    /// A veth pair whose host end, `host_name`, is a port of `bridge`.
    Bridged { bridge: String, host_name: String },
    /// A macvlan on `parent`: the instance appears on the parent's network itself.
    Macvlan { parent: String },
}

/// One NIC to plug into an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The device's name in the instance config.
    pub device: String,
    #[serde(flatten)]
    pub kind: NicKind,
    /// The interface name inside the instance.
    pub name: String,
    pub hwaddr: String,
    pub mtu: Option<u32>,
}

/// The network namespace of process `pid`.
pub fn netns_of(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Plugs `nics` into the namespace of `pid`, each made directly inside it (no rename dance,
/// so a name taken inside is a clear error). All or nothing: when one cannot be plugged,
/// those made before it are removed again.
pub fn plug(nl: &dyn Netlink, pid: i32, nics: &[NicSpec]) -> Result<()> {
    let netns = netns_of(pid);
    let mut made: Vec<&NicSpec> = Vec::new();
    let result = (|| {
        for nic in nics {
            plug_one(nl, &netns, nic)?;
            made.push(nic);
        }
        // Inside: the new interfaces up, and loopback, which an init may leave down.
        let mut names: Vec<String> = nics.iter().map(|n| n.name.clone()).collect();
        names.push("lo".into());
        nl.set_up_in(&netns, &names)
    })();
    if result.is_err() {
        for nic in made.iter().rev() {
            // A veth goes with its host end; a macvlan lives inside only.
            let undone = match &nic.kind {
                NicKind::Bridged { host_name, .. } => nl.delete_link(host_name),
                NicKind::Macvlan { .. } => nl.delete_link_in(&netns, &nic.name),
            };
            if let Err(e) = undone {
                tracing::warn!(nic = nic.device, error = %crate::error::chain(&e), "undo a plug");
            }
        }
    }
    result
}

fn plug_one(nl: &dyn Netlink, netns: &Path, nic: &NicSpec) -> Result<()> {
    let peer = PeerSpec {
        name: nic.name.clone(),
        hwaddr: parse_hwaddr(&nic.hwaddr)?,
        mtu: nic.mtu,
        netns: netns.to_path_buf(),
    };
    match &nic.kind {
        NicKind::Bridged { bridge, host_name } => {
            let br = nl
                .link(bridge)?
                .ok_or_else(|| NetworkError::NoBridge(bridge.clone()))?;
            // A stale host end (a crashed start) would block the name.
            nl.delete_link(host_name)?;
            nl.add_veth(host_name, Some(br.index), &peer)
        }
        NicKind::Macvlan { parent } => nl.add_macvlan(parent, &peer),
    }
}

/// Removes interface `name` from the namespace of `pid` (hot-unplug). A veth's host end
/// goes with it.
pub fn unplug(nl: &dyn Netlink, pid: i32, name: &str) -> Result<()> {
    nl.delete_link_in(&netns_of(pid), name)
}

/// An instance's interfaces and addresses, read inside its namespace.
pub fn interfaces(nl: &dyn Netlink, pid: i32) -> Result<Interfaces> {
    nl.interfaces_in(&[netns_of(pid)])
        .pop()
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// The interfaces of many instances at once (for listings): one thread for all.
pub fn interfaces_of_many(nl: &dyn Netlink, pids: &[i32]) -> Vec<Result<Interfaces>> {
    let paths: Vec<PathBuf> = pids.iter().map(|p| netns_of(*p)).collect();
    nl.interfaces_in(&paths)
}

/// Writes `nics` for the start hook to read.
pub fn write_plan(path: &Path, nics: &[NicSpec]) -> Result<()> {
    let text = serde_json::to_string(nics).expect("nic specs serialize");
    std::fs::write(path, text).map_err(|e| NetworkError::io("write", path, e))
}

/// Reads the plan [`write_plan`] wrote.
pub fn read_plan(path: &Path) -> Result<Vec<NicSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| NetworkError::io("read", path, e))?;
    serde_json::from_str(&text).map_err(|e| NetworkError::Parse {
        path: path.into(),
        source: e,
    })
}

/// `hutchd-helper __nic-plug <plan>`, the runtime's start hook between namespace setup and
/// init's exec (run inside the monitor, or executed): plugs the plan's NICs into the
/// namespaces of `pid`, the container's init.
pub fn plug_planned(plan: &Path, pid: i32) -> Result<()> {
    plug(&crate::SystemNetlink::new(), pid, &read_plan(plan)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{FakeNetlink, NetlinkCall};

    fn bridged(name: &str, host_name: &str) -> NicSpec {
        NicSpec {
            device: name.into(),
            kind: NicKind::Bridged {
                bridge: "br0".into(),
                host_name: host_name.into(),
            },
            name: name.into(),
            hwaddr: "00:16:3e:00:00:01".into(),
            mtu: None,
        }
    }

    #[test]
    fn plug_makes_veths_inside_and_brings_them_up() {
        let nl = FakeNetlink::new();
        let br = nl.ensure_bridge("br0", None).unwrap();
        plug(
            &nl,
            42,
            &[bridged("eth0", "vethA"), bridged("eth1", "vethB")],
        )
        .unwrap();
        let inside: Vec<(String, bool)> = nl
            .links_in(&netns_of(42))
            .into_iter()
            .map(|l| (l.name, l.up))
            .collect();
        assert_eq!(
            inside,
            [
                ("eth0".into(), true),
                ("eth1".into(), true),
                ("lo".into(), true)
            ]
        );
        assert!(nl.calls().contains(&NetlinkCall::AddVeth {
            host_name: "vethA".into(),
            master: Some(br.index),
            peer: PeerSpec {
                name: "eth0".into(),
                hwaddr: [0, 0x16, 0x3e, 0, 0, 1],
                mtu: None,
                netns: netns_of(42),
            },
        }));
        assert_eq!(
            nl.calls().last(),
            Some(&NetlinkCall::SetUpIn {
                netns: netns_of(42),
                names: vec!["eth0".into(), "eth1".into(), "lo".into()],
            })
        );
        unplug(&nl, 42, "eth1").unwrap();
        assert_eq!(nl.host_links(), ["br0", "lo", "vethA"]);
        let ifaces = interfaces(&nl, 42).unwrap();
        assert_eq!(ifaces.len(), 2);
    }

    #[test]
    fn a_plug_that_fails_at_any_call_leaves_no_interface() {
        for n in 1.. {
            let nl = FakeNetlink::new();
            nl.ensure_bridge("br0", None).unwrap();
            nl.add_host_link("eth9", "");
            let mut mv = bridged("mv0", "unused");
            mv.kind = NicKind::Macvlan {
                parent: "eth9".into(),
            };
            let nics = [bridged("eth0", "vethA"), mv, bridged("eth1", "vethB")];
            nl.fail_call(n);
            match plug(&nl, 42, &nics) {
                Err(_) => {
                    assert_eq!(nl.host_links(), ["br0", "eth9", "lo"], "call {n}");
                    let inside: Vec<String> = nl
                        .links_in(&netns_of(42))
                        .into_iter()
                        .map(|l| l.name)
                        .collect();
                    assert!(inside.iter().all(|l| l == "lo"), "call {n}: {inside:?}");
                }
                Ok(()) => {
                    assert!(n > 6);
                    break;
                }
            }
        }
    }

    #[test]
    fn a_missing_bridge_is_the_callers_mistake() {
        let nl = FakeNetlink::new();
        let err = plug(&nl, 42, &[bridged("eth0", "vethA")]).unwrap_err();
        assert!(
            matches!(err, NetworkError::NoBridge(ref b) if b == "br0"),
            "{err}"
        );
        assert!(err.is_invalid());
        assert_eq!(nl.host_links(), ["lo"]);
    }

    #[test]
    fn plans_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let nics = vec![
            NicSpec {
                device: "eth0".into(),
                kind: NicKind::Bridged {
                    bridge: "hutchbr0".into(),
                    host_name: "veth01234567".into(),
                },
                name: "eth0".into(),
                hwaddr: "00:16:3e:00:00:01".into(),
                mtu: Some(1400),
            },
            NicSpec {
                device: "mv".into(),
                kind: NicKind::Macvlan {
                    parent: "dummy0".into(),
                },
                name: "eth1".into(),
                hwaddr: "00:16:3e:00:00:02".into(),
                mtu: None,
            },
        ];
        let p = dir.path().join("nics.json");
        write_plan(&p, &nics).unwrap();
        assert_eq!(read_plan(&p).unwrap(), nics);
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .contains("\"nictype\":\"bridged\""));
    }
}
