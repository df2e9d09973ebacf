//! NICs: a veth pair with one end on a bridge, or a macvlan on a parent device, made
//! straight inside an instance's network namespace; and the instance's interfaces as seen
//! from inside.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::addr::parse_hwaddr;
use crate::error::{NetworkError, Result};
use crate::netlink::{with_netlink, with_netlink_each, Address, Link, PeerSpec};

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

pub fn netns_of(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Plugs `nics` into the namespace of `pid`, each made directly inside it (no rename dance,
/// so a name taken inside is a clear error, and nothing is left half-made on the host).
pub fn plug(pid: i32, nics: &[NicSpec]) -> Result<()> {
    let netns = netns_of(pid);
    with_netlink(None, |nl| {
        for nic in nics {
            let peer = PeerSpec {
                name: &nic.name,
                hwaddr: parse_hwaddr(&nic.hwaddr)?,
                mtu: nic.mtu,
                netns: &netns,
            };
            match &nic.kind {
                NicKind::Bridged { bridge, host_name } => {
                    let br = nl.link(bridge)?.ok_or_else(|| {
                        NetworkError::invalid(format!("Parent bridge {bridge:?} doesn't exist"))
                    })?;
                    // A stale host end (a crashed start) would block the name.
                    nl.delete_link(host_name)?;
                    nl.add_veth(host_name, Some(br.index), &peer)?;
                }
                NicKind::Macvlan { parent } => nl.add_macvlan(parent, &peer)?,
            }
        }
        Ok(())
    })?;
    // Inside: the new interfaces up, and loopback, which an init may leave down.
    with_netlink(Some(&netns), |nl| {
        for nic in nics {
            nl.set_up(&nic.name)?;
        }
        nl.set_up("lo")
    })
}

/// Removes interface `name` from the namespace of `pid` (hot-unplug). A veth's host end
/// goes with it.
pub fn unplug(pid: i32, name: &str) -> Result<()> {
    with_netlink(Some(&netns_of(pid)), |nl| nl.delete_link(name))
}

/// Each interface with its addresses.
pub type Interfaces = Vec<(Link, Vec<Address>)>;

fn pair_up(links: Vec<Link>, addrs: Vec<Address>) -> Interfaces {
    links
        .into_iter()
        .map(|l| {
            let a = addrs
                .iter()
                .filter(|a| a.index == l.index)
                .cloned()
                .collect();
            (l, a)
        })
        .collect()
}

/// An instance's interfaces and addresses, read inside its namespace.
pub fn interfaces(pid: i32) -> Result<Interfaces> {
    let (links, addrs) = with_netlink(Some(&netns_of(pid)), |nl| {
        Ok((nl.links()?, nl.addresses()?))
    })?;
    Ok(pair_up(links, addrs))
}

/// The interfaces of many instances at once (for listings): one thread for all.
pub fn interfaces_of_many(pids: &[i32]) -> Vec<Result<Interfaces>> {
    let paths: Vec<PathBuf> = pids.iter().map(|p| netns_of(*p)).collect();
    with_netlink_each(&paths, |nl| Ok(pair_up(nl.links()?, nl.addresses()?)))
}

/// The first global IPv4 address of every interface but loopback, by interface name.
pub fn ipv4_addresses(pid: i32) -> Result<Vec<(String, IpAddr)>> {
    Ok(interfaces(pid)?
        .into_iter()
        .filter(|(l, _)| l.link_type != "loopback")
        .flat_map(|(l, addrs)| {
            addrs
                .into_iter()
                .filter(|a| a.addr.is_ipv4() && a.scope == "global")
                .map(move |a| (l.name.clone(), a.addr))
        })
        .collect())
}

/// Writes `nics` for the start hook to read.
pub fn write_plan(path: &Path, nics: &[NicSpec]) -> Result<()> {
    let text = serde_json::to_string(nics).expect("nic specs serialize");
    std::fs::write(path, text).map_err(|e| NetworkError::io("write", path, e))
}

pub fn read_plan(path: &Path) -> Result<Vec<NicSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| NetworkError::io("read", path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| NetworkError::invalid(format!("bad NIC plan {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
