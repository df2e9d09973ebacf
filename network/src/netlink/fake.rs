//! A recording [`Netlink`] for unit tests: it keeps a small model of the host's links and
//! of instances' namespaces, records every call with its arguments, and fails the call it
//! is told to, so that callers' undo paths can be checked without root.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{Address, Interfaces, Link, Netlink, PeerSpec};
use crate::addr::{Ipv4Net, Ipv6Net};
use crate::error::{NetworkError, Result};
use crate::journal::Journal;

/// One call made to a [`FakeNetlink`], with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkCall {
    Link(String),
    Links,
    Addresses,
    UsedPrefixes,
    EnsureBridge {
        name: String,
        mtu: Option<u32>,
    },
    SyncAddresses {
        index: u32,
        wanted: Vec<(IpAddr, u8)>,
    },
    EnableForwarding {
        ipv6: bool,
    },
    DeleteLink(String),
    AddVeth {
        host_name: String,
        master: Option<u32>,
        peer: PeerSpec,
    },
    AddMacvlan {
        parent: String,
        peer: PeerSpec,
    },
    SetUpIn {
        netns: PathBuf,
        names: Vec<String>,
    },
    DeleteLinkIn {
        netns: PathBuf,
        name: String,
    },
    InterfacesIn(Vec<PathBuf>),
}

#[derive(Debug, Default)]
struct Model {
    calls: Vec<NetlinkCall>,
    /// The number (1-based, over the fake's life) of the call that fails.
    fail_at: Option<usize>,
    next_index: u32,
    host: BTreeMap<String, Link>,
    addrs: BTreeMap<u32, Vec<(IpAddr, u8)>>,
    netns: BTreeMap<PathBuf, BTreeMap<String, Link>>,
    /// A veth's end inside a namespace → its host end.
    veth_peers: BTreeMap<(PathBuf, String), String>,
    used: (Vec<Ipv4Net>, Vec<Ipv6Net>),
    journal: Option<Journal>,
}

impl Model {
    fn new_link(&mut self, name: &str, kind: &str) -> Link {
        self.next_index += 1;
        Link {
            index: self.next_index,
            name: name.into(),
            kind: kind.into(),
            link_type: if name == "lo" {
                "loopback"
            } else {
                "broadcast"
            }
            .into(),
            mtu: 1500,
            ..Link::default()
        }
    }

    fn ns(&mut self, netns: &Path) -> &mut BTreeMap<String, Link> {
        if !self.netns.contains_key(netns) {
            let lo = self.new_link("lo", "");
            self.netns
                .insert(netns.to_path_buf(), BTreeMap::from([("lo".into(), lo)]));
        }
        self.netns.get_mut(netns).expect("just made")
    }

    fn remove_host(&mut self, name: &str) {
        if let Some(l) = self.host.remove(name) {
            self.addrs.remove(&l.index);
            let peer = self
                .veth_peers
                .iter()
                .find(|(_, host)| *host == name)
                .map(|(k, _)| k.clone());
            if let Some((ns, peer)) = peer {
                self.veth_peers.remove(&(ns.clone(), peer.clone()));
                if let Some(links) = self.netns.get_mut(&ns) {
                    links.remove(&peer);
                }
            }
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct FakeNetlink {
    model: Mutex<Model>,
}

impl Default for FakeNetlink {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeNetlink {
    /// A host with a loopback device only.
    pub fn new() -> Self {
        let mut m = Model::default();
        let lo = m.new_link("lo", "");
        m.host.insert("lo".into(), lo);
        FakeNetlink {
            model: Mutex::new(m),
        }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Also writes every call to `journal`.
    pub fn journal_to(&self, journal: &Journal) {
        self.model().journal = Some(journal.clone());
    }

    /// Makes the `n`th call from now fail (1: the next one), without effect.
    pub fn fail_call(&self, n: usize) {
        let mut m = self.model();
        m.fail_at = Some(m.calls.len() + n);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<NetlinkCall> {
        self.model().calls.clone()
    }

    /// The names of the host's links, loopback included.
    pub fn host_links(&self) -> Vec<String> {
        self.model().host.keys().cloned().collect()
    }

    /// The addresses of host link `name`.
    pub fn host_addresses(&self, name: &str) -> Vec<(IpAddr, u8)> {
        let m = self.model();
        m.host
            .get(name)
            .and_then(|l| m.addrs.get(&l.index))
            .cloned()
            .unwrap_or_default()
    }

    /// The links inside namespace `netns` (loopback included, once it was touched).
    pub fn links_in(&self, netns: &Path) -> Vec<Link> {
        self.model()
            .netns
            .get(netns)
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds a host link of `kind` (`""` for a physical device), as if made by someone else.
    pub fn add_host_link(&self, name: &str, kind: &str) {
        let mut m = self.model();
        let l = m.new_link(name, kind);
        m.host.insert(name.into(), l);
    }

    /// What [`Netlink::used_prefixes`] answers.
    pub fn set_used_prefixes(&self, v4: Vec<Ipv4Net>, v6: Vec<Ipv6Net>) {
        self.model().used = (v4, v6);
    }

    /// Records `call`, and fails it if it is the one to fail.
    fn record(&self, call: NetlinkCall) -> Result<MutexGuard<'_, Model>> {
        let mut m = self.model();
        let what = format!("{call:?}");
        if let Some(j) = &m.journal {
            j.push(format!("netlink {what}"));
        }
        m.calls.push(call);
        if m.fail_at == Some(m.calls.len()) {
            return Err(NetworkError::netlink(
                format!("run {what} (injected)"),
                rtnetlink::Error::RequestFailed,
            ));
        }
        Ok(m)
    }
}

impl Netlink for FakeNetlink {
    fn link(&self, name: &str) -> Result<Option<Link>> {
        let m = self.record(NetlinkCall::Link(name.into()))?;
        Ok(m.host.get(name).cloned())
    }

    fn links(&self) -> Result<Vec<Link>> {
        let m = self.record(NetlinkCall::Links)?;
        Ok(m.host.values().cloned().collect())
    }

    fn addresses(&self) -> Result<Vec<Address>> {
        let m = self.record(NetlinkCall::Addresses)?;
        Ok(m.addrs
            .iter()
            .flat_map(|(index, list)| {
                list.iter().map(|(addr, prefix)| Address {
                    index: *index,
                    addr: *addr,
                    prefix: *prefix,
                    scope: "global".into(),
                })
            })
            .collect())
    }

    fn used_prefixes(&self) -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
        let m = self.record(NetlinkCall::UsedPrefixes)?;
        Ok(m.used.clone())
    }

    fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link> {
        let mut m = self.record(NetlinkCall::EnsureBridge {
            name: name.into(),
            mtu,
        })?;
        if !m.host.contains_key(name) {
            let l = m.new_link(name, "bridge");
            m.host.insert(name.into(), l);
        }
        let link = m.host.get_mut(name).expect("just made");
        if link.kind != "bridge" {
            return Err(NetworkError::NotABridge(name.into()));
        }
        link.up = true;
        if let Some(mtu) = mtu {
            link.mtu = mtu;
        }
        Ok(link.clone())
    }

    fn sync_addresses(&self, index: u32, wanted: &[(IpAddr, u8)]) -> Result<()> {
        let mut m = self.record(NetlinkCall::SyncAddresses {
            index,
            wanted: wanted.to_vec(),
        })?;
        m.addrs.insert(index, wanted.to_vec());
        Ok(())
    }

    fn enable_forwarding(&self, ipv6: bool) -> Result<()> {
        self.record(NetlinkCall::EnableForwarding { ipv6 })
            .map(drop)
    }

    fn delete_link(&self, name: &str) -> Result<()> {
        let mut m = self.record(NetlinkCall::DeleteLink(name.into()))?;
        m.remove_host(name);
        Ok(())
    }

    fn add_veth(&self, host_name: &str, master: Option<u32>, peer: &PeerSpec) -> Result<()> {
        let mut m = self.record(NetlinkCall::AddVeth {
            host_name: host_name.into(),
            master,
            peer: peer.clone(),
        })?;
        let mut host = m.new_link(host_name, "veth");
        host.master = master;
        host.up = true;
        let mut inside = m.new_link(&peer.name, "veth");
        inside.hwaddr = peer.hwaddr.to_vec();
        m.host.insert(host_name.into(), host);
        m.ns(&peer.netns).insert(peer.name.clone(), inside);
        m.veth_peers.insert(
            (peer.netns.clone(), peer.name.clone()),
            host_name.to_string(),
        );
        Ok(())
    }

    fn add_macvlan(&self, parent: &str, peer: &PeerSpec) -> Result<()> {
        let mut m = self.record(NetlinkCall::AddMacvlan {
            parent: parent.into(),
            peer: peer.clone(),
        })?;
        if !m.host.contains_key(parent) {
            return Err(NetworkError::NoParent(parent.into()));
        }
        let mut inside = m.new_link(&peer.name, "macvlan");
        inside.up = true;
        m.ns(&peer.netns).insert(peer.name.clone(), inside);
        Ok(())
    }

    fn set_up_in(&self, netns: &Path, names: &[String]) -> Result<()> {
        let mut m = self.record(NetlinkCall::SetUpIn {
            netns: netns.into(),
            names: names.to_vec(),
        })?;
        let links = m.ns(netns);
        for n in names {
            let l = links.get_mut(n).ok_or_else(|| NetworkError::LinkMissing {
                name: n.clone(),
                place: "in the instance".into(),
            })?;
            l.up = true;
        }
        Ok(())
    }

    fn delete_link_in(&self, netns: &Path, name: &str) -> Result<()> {
        let mut m = self.record(NetlinkCall::DeleteLinkIn {
            netns: netns.into(),
            name: name.into(),
        })?;
        m.ns(netns).remove(name);
        if let Some(host) = m
            .veth_peers
            .remove(&(netns.to_path_buf(), name.to_string()))
        {
            m.remove_host(&host);
        }
        Ok(())
    }

    fn interfaces_in(&self, netns: &[PathBuf]) -> Vec<Result<Interfaces>> {
        let mut m = match self.record(NetlinkCall::InterfacesIn(netns.to_vec())) {
            Ok(m) => m,
            Err(e) => {
                let mut first = Some(e);
                return netns
                    .iter()
                    .map(|_| Err(first.take().unwrap_or(NetworkError::WorkerGone)))
                    .collect();
            }
        };
        netns
            .iter()
            .map(|ns| Ok(m.ns(ns).values().map(|l| (l.clone(), Vec::new())).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> PeerSpec {
        PeerSpec {
            name: name.into(),
            hwaddr: [0, 0x16, 0x3e, 0, 0, 1],
            mtu: None,
            netns: "/proc/42/ns/net".into(),
        }
    }

    #[test]
    fn models_bridges_and_veths_and_fails_the_nth_call() {
        let nl = FakeNetlink::new();
        let br = nl.ensure_bridge("br0", Some(1400)).unwrap();
        assert_eq!(br.mtu, 1400);
        nl.add_veth("veth1", Some(br.index), &peer("eth0")).unwrap();
        assert_eq!(nl.host_links(), ["br0", "lo", "veth1"]);
        nl.set_up_in(Path::new("/proc/42/ns/net"), &["eth0".into(), "lo".into()])
            .unwrap();
        // Removing the inside end removes the host end, as the kernel does.
        nl.delete_link_in(Path::new("/proc/42/ns/net"), "eth0")
            .unwrap();
        assert_eq!(nl.host_links(), ["br0", "lo"]);

        nl.fail_call(2);
        nl.link("br0").unwrap();
        assert!(nl.delete_link("br0").is_err());
        assert_eq!(
            nl.host_links(),
            ["br0", "lo"],
            "a failed call has no effect"
        );
        nl.delete_link("br0").unwrap();
        assert_eq!(
            nl.calls().last(),
            Some(&NetlinkCall::DeleteLink("br0".into()))
        );

        nl.add_host_link("eth9", "");
        assert!(matches!(
            nl.ensure_bridge("eth9", None),
            Err(NetworkError::NotABridge(_))
        ));
    }
}
