//! Links, addresses and routes through rtnetlink, behind a blocking facade: each use runs on
//! its own short thread (which may first join another network namespace) with a private
//! single-threaded runtime, so callers need not be async and never block the daemon's.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{
    LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::addr::{Ipv4Net, Ipv6Net};
use crate::error::{NetworkError, Result};

/// A network interface as netlink reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `bridge`, `veth`, `macvlan`...; empty for physical devices and loopback.
    pub kind: String,
    /// The bridge it is a port of.
    pub master: Option<u32>,
    pub hwaddr: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    /// LXD's type: `broadcast`, `loopback`, `point-to-point` or `unknown`.
    pub link_type: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
    /// LXD's scope: `global`, `local` or `link`.
    pub scope: String,
}

/// The device a NIC is made in: a name, an address and an MTU inside the instance.
#[derive(Debug, Clone)]
pub struct PeerSpec<'a> {
    pub name: &'a str,
    pub hwaddr: [u8; 6],
    pub mtu: Option<u32>,
    /// The instance's network namespace (`/proc/<pid>/ns/net`).
    pub netns: &'a Path,
}

/// A netlink connection in one namespace. Made by [`with_netlink`].
pub struct Netlink<'rt> {
    rt: &'rt tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

fn join_netns(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| NetworkError::io("open", path, e))?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::Sys {
        action: format!("join the network namespace {}", path.display()),
        source: e,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetworkError::netlink("start a runtime", e))
}

/// A connection in the thread's current namespace (a netlink socket belongs for good to
/// the namespace it was made in).
fn connect(rt: &tokio::runtime::Runtime) -> Result<Netlink<'_>> {
    let handle = rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetworkError::netlink("open a netlink socket", e))?;
        tokio::spawn(conn);
        Ok::<_, NetworkError>(handle)
    })?;
    Ok(Netlink { rt, handle })
}

/// Runs `f` with a netlink connection in the namespace at `netns` (the caller's when `None`).
pub fn with_netlink<T: Send>(
    netns: Option<&Path>,
    f: impl FnOnce(&Netlink) -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(path) = netns {
                join_netns(path)?;
            }
            let rt = runtime()?;
            f(&connect(&rt)?)
        })
        .join()
        .unwrap_or_else(|_| Err(NetworkError::netlink("run", "netlink thread panicked")))
    })
}

/// Runs `f` in each namespace of `netns`, one after the other on one thread with one
/// runtime: listing many instances costs one thread, not one each.
pub fn with_netlink_each<T: Send>(
    netns: &[PathBuf],
    f: impl Fn(&Netlink) -> Result<T> + Send + Sync,
) -> Vec<Result<T>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let msg = e.to_string();
                    return netns
                        .iter()
                        .map(|_| Err(NetworkError::netlink("run", &msg)))
                        .collect();
                }
            };
            netns
                .iter()
                .map(|path| {
                    join_netns(path)?;
                    f(&connect(&rt)?)
                })
                .collect()
        })
        .join()
        .unwrap_or_else(|_| {
            netns
                .iter()
                .map(|_| Err(NetworkError::netlink("run", "netlink thread panicked")))
                .collect()
        })
    })
}

fn link_from(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        link_type: if m.header.link_layer_type == LinkLayerType::Loopback {
            "loopback"
        } else if m.header.flags.contains(LinkFlags::Pointopoint) {
            "point-to-point"
        } else if m.header.link_layer_type == LinkLayerType::Ether {
            "broadcast"
        } else {
            "unknown"
        }
        .into(),
        ..Link::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(mac) => l.hwaddr = mac.clone(),
            LinkAttribute::Mtu(mtu) => l.mtu = *mtu,
            LinkAttribute::Controller(c) => l.master = Some(*c),
            LinkAttribute::Stats64(s) => {
                l.rx_bytes = s.rx_bytes;
                l.tx_bytes = s.tx_bytes;
                l.rx_packets = s.rx_packets;
                l.tx_packets = s.tx_packets;
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn scope_name(addr: &IpAddr, scope: AddressScope) -> &'static str {
    match (scope, addr) {
        (AddressScope::Host, _) => "local",
        (AddressScope::Link, _) => "link",
        (_, IpAddr::V4(a)) if a.is_loopback() => "local",
        (_, IpAddr::V6(a)) if a.is_loopback() => "local",
        _ => "global",
    }
}

fn nl_err(action: &str) -> impl Fn(rtnetlink::Error) -> NetworkError + '_ {
    move |e| NetworkError::netlink(action, e)
}

impl Netlink<'_> {
    /// Every link in the namespace.
    pub fn links(&self) -> Result<Vec<Link>> {
        self.rt.block_on(async {
            let msgs: Vec<LinkMessage> = self
                .handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl_err("list links"))?;
            Ok(msgs.iter().map(link_from).collect())
        })
    }

    /// Link `name`, asked for by name (not a dump of every link: with hundreds of
    /// containers' veths on the host, a dump per lookup is what a launch would cost).
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        let found: std::result::Result<Vec<LinkMessage>, rtnetlink::Error> = self.rt.block_on(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_collect(),
        );
        match found {
            Ok(msgs) => Ok(msgs.first().map(link_from)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
                Ok(None)
            }
            Err(e) => Err(NetworkError::netlink(format!("find link {name}"), e)),
        }
    }

    /// Every address in the namespace.
    pub fn addresses(&self) -> Result<Vec<Address>> {
        self.rt.block_on(async {
            let msgs: Vec<_> = self
                .handle
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl_err("list addresses"))?;
            let mut out = Vec::new();
            for m in msgs {
                let addr = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = addr.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(addr) = addr {
                    out.push(Address {
                        index: m.header.index,
                        addr,
                        prefix: m.header.prefix_len,
                        scope: scope_name(&addr, m.header.scope).into(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// The IPv4 prefixes of the main routing table and of every address, but the default
    /// route: what a new subnet must not overlap.
    pub fn used_ipv4(&self) -> Result<Vec<Ipv4Net>> {
        let mut used: Vec<Ipv4Net> = self.rt.block_on(async {
            let routes: Vec<_> = self
                .handle
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .map_err(nl_err("list routes"))?;
            Ok::<_, NetworkError>(
                routes
                    .iter()
                    // Main-table unicast routes only: the local table holds every
                    // address's /32 and broadcast, which the addresses cover anyway.
                    .filter(|r| r.header.destination_prefix_length > 0)
                    .filter(|r| r.header.table == RouteHeader::RT_TABLE_MAIN)
                    .filter(|r| r.header.kind == RouteType::Unicast)
                    .filter_map(|r| {
                        r.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(Ipv4Net {
                                addr: *d,
                                prefix: r.header.destination_prefix_length,
                            }),
                            _ => None,
                        })
                    })
                    .collect(),
            )
        })?;
        for a in self.addresses()? {
            if let IpAddr::V4(v4) = a.addr {
                if !v4.is_loopback() {
                    used.push(Ipv4Net {
                        addr: v4,
                        prefix: a.prefix,
                    });
                }
            }
        }
        Ok(used)
    }

    /// The IPv6 prefixes of the host's global addresses.
    pub fn used_ipv6(&self) -> Result<Vec<Ipv6Net>> {
        Ok(self
            .addresses()?
            .into_iter()
            .filter_map(|a| match a.addr {
                IpAddr::V6(v6) if a.scope == "global" => Some(Ipv6Net {
                    addr: v6,
                    prefix: a.prefix,
                }),
                _ => None,
            })
            .collect())
    }

    /// Creates bridge `name` if it does not exist, sets its MTU, and brings it up.
    pub fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link> {
        if self.link(name)?.is_none() {
            self.rt
                .block_on(
                    self.handle
                        .link()
                        .add(LinkBridge::new(name).build())
                        .execute(),
                )
                .map_err(nl_err(&format!("create bridge {name}")))?;
        }
        let link = self
            .link(name)?
            .ok_or_else(|| NetworkError::netlink("find bridge", name))?;
        if link.kind != "bridge" {
            return Err(NetworkError::invalid(format!(
                "Interface {name:?} exists and is not a bridge"
            )));
        }
        let mut msg = LinkUnspec::new_with_index(link.index).up();
        if let Some(m) = mtu {
            msg = msg.mtu(m);
        }
        self.rt
            .block_on(self.handle.link().set(msg.build()).execute())
            .map_err(nl_err(&format!("bring up {name}")))?;
        Ok(link)
    }

    /// Makes the global addresses of link `index` exactly `wanted`.
    pub fn sync_addresses(&self, index: u32, wanted: &[(IpAddr, u8)]) -> Result<()> {
        let current: Vec<_> = self.rt.block_on(async {
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .map_err(nl_err("list addresses"))
        })?;
        let mut have = Vec::new();
        for m in current {
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let Some(addr) = addr else { continue };
            if m.header.scope == AddressScope::Link {
                continue;
            }
            if wanted.contains(&(addr, m.header.prefix_len)) {
                have.push((addr, m.header.prefix_len));
            } else {
                self.rt
                    .block_on(self.handle.address().del(m).execute())
                    .map_err(nl_err("remove an address"))?;
            }
        }
        for w in wanted.iter().filter(|w| !have.contains(w)) {
            self.rt
                .block_on(self.handle.address().add(index, w.0, w.1).execute())
                .map_err(nl_err(&format!("add address {}/{}", w.0, w.1)))?;
        }
        Ok(())
    }

    /// Deletes link `name`; absent is fine.
    pub fn delete_link(&self, name: &str) -> Result<()> {
        if let Some(l) = self.link(name)? {
            self.rt
                .block_on(self.handle.link().del(l.index).execute())
                .map_err(nl_err(&format!("delete {name}")))?;
        }
        Ok(())
    }

    /// Creates a veth pair: `host_name` stays here, a port of bridge `master` and up; its
    /// peer is made directly in the instance's namespace, named and addressed (still down).
    pub fn add_veth(&self, host_name: &str, master: Option<u32>, peer: &PeerSpec) -> Result<()> {
        let ns = File::open(peer.netns).map_err(|e| NetworkError::io("open", peer.netns, e))?;
        let mut p = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.name.to_string())
            .address(peer.hwaddr.to_vec())
            .setns_by_fd(ns.as_raw_fd());
        // Not up yet: a veth cannot open before its pair is joined (ENOTCONN); the caller
        // brings it up inside the namespace.
        if let Some(m) = peer.mtu {
            p = p.mtu(m);
        }
        let mut host = LinkVeth::new(host_name, peer.name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
            .up();
        if let Some(m) = peer.mtu {
            host = host.mtu(m);
        }
        if let Some(master) = master {
            host = host.controller(master);
        }
        self.rt
            .block_on(self.handle.link().add(host.build()).execute())
            .map_err(nl_err(&format!("create veth {host_name}")))
    }

    /// Creates a macvlan (bridge mode) on `parent`, directly in the instance's namespace.
    pub fn add_macvlan(&self, parent: &str, peer: &PeerSpec) -> Result<()> {
        let parent_link = self.link(parent)?.ok_or_else(|| {
            NetworkError::invalid(format!("Parent device {parent:?} doesn't exist"))
        })?;
        let ns = File::open(peer.netns).map_err(|e| NetworkError::io("open", peer.netns, e))?;
        let mut m = LinkMacVlan::new(peer.name, parent_link.index, MacVlanMode::Bridge)
            .address(peer.hwaddr.to_vec())
            .setns_by_fd(ns.as_raw_fd())
            .up();
        if let Some(mtu) = peer.mtu {
            m = m.mtu(mtu);
        }
        self.rt
            .block_on(self.handle.link().add(m.build()).execute())
            .map_err(nl_err(&format!("create macvlan on {parent}")))
    }

    /// Brings link `name` up (used for `lo` in a new namespace).
    pub fn set_up(&self, name: &str) -> Result<()> {
        let l = self
            .link(name)?
            .ok_or_else(|| NetworkError::netlink("find link", name))?;
        self.rt
            .block_on(
                self.handle
                    .link()
                    .set(LinkUnspec::new_with_index(l.index).up().build())
                    .execute(),
            )
            .map_err(nl_err(&format!("bring up {name}")))
    }
}

/// An IPv6 address as netlink wants it, for callers that hold a prefix.
pub fn ipv6(net: &Ipv6Net) -> (IpAddr, u8) {
    (IpAddr::V6(net.addr), net.prefix)
}

/// An IPv4 address as netlink wants it.
pub fn ipv4(net: &Ipv4Net) -> (IpAddr, u8) {
    (IpAddr::V4(net.addr), net.prefix)
}
