//! The netlink operations themselves, as async functions over one rtnetlink handle: the
//! worker runs them on its connection, and a namespace thread on its own.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{
    Handle, LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{Address, Link, PeerSpec};
use crate::addr::{Ipv4Net, Ipv6Net};
use crate::error::{NetworkError, Result};

fn link_from(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        link_type: super::link_type_name(m.header.link_layer_type.into(), m.header.flags.bits())
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

fn nl_err(action: &str) -> impl Fn(rtnetlink::Error) -> NetworkError + '_ {
    move |e| NetworkError::netlink(action, e)
}

/// Every link in the handle's namespace.
pub(super) async fn links(h: &Handle) -> Result<Vec<Link>> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list links"))?;
    Ok(msgs.iter().map(link_from).collect())
}

/// Link `name`, or `None`.
pub(super) async fn link(h: &Handle, name: &str) -> Result<Option<Link>> {
    let found: std::result::Result<Vec<LinkMessage>, rtnetlink::Error> = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_collect()
        .await;
    match found {
        Ok(msgs) => Ok(msgs.first().map(link_from)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => Ok(None),
        Err(e) => Err(NetworkError::netlink(format!("find link {name}"), e)),
    }
}

fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// Every address in the handle's namespace.
pub(super) async fn addresses(h: &Handle) -> Result<Vec<Address>> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list addresses"))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            let addr = address_of(m)?;
            Some(Address {
                index: m.header.index,
                addr,
                prefix: m.header.prefix_len,
                scope: super::scope_name(&addr, m.header.scope.into()).into(),
            })
        })
        .collect())
}

/// See [`super::Netlink::used_prefixes`].
pub(super) async fn used_prefixes(h: &Handle) -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
    let routes: Vec<_> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list routes"))?;
    let mut used4: Vec<Ipv4Net> = routes
        .iter()
        // Main-table unicast routes only: the local table holds every address's /32 and
        // broadcast, which the addresses cover anyway.
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
        .collect();
    let mut used6 = Vec::new();
    for a in addresses(h).await? {
        match a.addr {
            IpAddr::V4(v4) if !v4.is_loopback() => used4.push(Ipv4Net {
                addr: v4,
                prefix: a.prefix,
            }),
            IpAddr::V6(v6) if a.scope == "global" => used6.push(Ipv6Net {
                addr: v6,
                prefix: a.prefix,
            }),
            _ => {}
        }
    }
    Ok((used4, used6))
}

/// See [`super::Netlink::ensure_bridge`].
pub(super) async fn ensure_bridge(h: &Handle, name: &str, mtu: Option<u32>) -> Result<Link> {
    if link(h, name).await?.is_none() {
        h.link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(nl_err(&format!("create bridge {name}")))?;
    }
    let link = link(h, name)
        .await?
        .ok_or_else(|| NetworkError::LinkMissing {
            name: name.into(),
            place: "after creating it".into(),
        })?;
    if link.kind != "bridge" {
        return Err(NetworkError::NotABridge(name.into()));
    }
    let mut msg = LinkUnspec::new_with_index(link.index).up();
    if let Some(m) = mtu {
        msg = msg.mtu(m);
    }
    h.link()
        .set(msg.build())
        .execute()
        .await
        .map_err(nl_err(&format!("bring up {name}")))?;
    Ok(link)
}

/// See [`super::Netlink::sync_addresses`].
pub(super) async fn sync_addresses(h: &Handle, index: u32, wanted: &[(IpAddr, u8)]) -> Result<()> {
    let current: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list addresses"))?;
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
            h.address()
                .del(m)
                .execute()
                .await
                .map_err(nl_err("remove an address"))?;
        }
    }
    for w in wanted.iter().filter(|w| !have.contains(w)) {
        h.address()
            .add(index, w.0, w.1)
            .execute()
            .await
            .map_err(nl_err(&format!("add address {}/{}", w.0, w.1)))?;
    }
    Ok(())
}

/// Deletes link `name`; absent is fine.
pub(super) async fn delete_link(h: &Handle, name: &str) -> Result<()> {
    if let Some(l) = link(h, name).await? {
        h.link()
            .del(l.index)
            .execute()
            .await
            .map_err(nl_err(&format!("delete {name}")))?;
    }
    Ok(())
}

fn open_netns(peer: &PeerSpec) -> Result<File> {
    File::open(&peer.netns).map_err(|e| NetworkError::io("open", &peer.netns, e))
}

/// See [`super::Netlink::add_veth`].
pub(super) async fn add_veth(
    h: &Handle,
    host_name: &str,
    master: Option<u32>,
    peer: &PeerSpec,
) -> Result<()> {
    let ns = open_netns(peer)?;
    let mut p = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.name.clone())
        .address(peer.hwaddr.to_vec())
        .setns_by_fd(ns.as_raw_fd());
    if let Some(m) = peer.mtu {
        p = p.mtu(m);
    }
    let mut host = LinkVeth::new(host_name, &peer.name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
        .up();
    if let Some(m) = peer.mtu {
        host = host.mtu(m);
    }
    if let Some(master) = master {
        host = host.controller(master);
    }
    match h.link().add(host.build()).execute().await {
        // The bridge numbers its ports in 10 bits: 1,023 at most, then EXFULL.
        Err(rtnetlink::Error::NetlinkError(e))
            if master.is_some() && e.raw_code().abs() == libc::EXFULL =>
        {
            Err(NetworkError::Invalid(format!(
                "cannot plug {host_name}: the bridge has no free port (a Linux bridge takes \
                 at most 1,023)"
            )))
        }
        other => other.map_err(nl_err(&format!("create veth {host_name}"))),
    }
}

/// See [`super::Netlink::add_macvlan`].
pub(super) async fn add_macvlan(h: &Handle, parent: &str, peer: &PeerSpec) -> Result<()> {
    let parent_link = link(h, parent)
        .await?
        .ok_or_else(|| NetworkError::NoParent(parent.into()))?;
    let ns = open_netns(peer)?;
    let mut m = LinkMacVlan::new(&peer.name, parent_link.index, MacVlanMode::Bridge)
        .address(peer.hwaddr.to_vec())
        .setns_by_fd(ns.as_raw_fd())
        .up();
    if let Some(mtu) = peer.mtu {
        m = m.mtu(mtu);
    }
    h.link()
        .add(m.build())
        .execute()
        .await
        .map_err(nl_err(&format!("create macvlan on {parent}")))
}

/// Brings link `name` up.
pub(super) async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let l = link(h, name)
        .await?
        .ok_or_else(|| NetworkError::LinkMissing {
            name: name.into(),
            place: "in the instance".into(),
        })?;
    h.link()
        .set(LinkUnspec::new_with_index(l.index).up().build())
        .execute()
        .await
        .map_err(nl_err(&format!("bring up {name}")))
}
