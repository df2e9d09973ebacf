//! Links, addresses and routes: the [`Netlink`] seam. [`SystemNetlink`] is one long-lived
//! worker (a thread owning one rtnetlink connection in the host's namespace, fed by a
//! channel); work inside an instance's namespace runs on a short thread that joins it,
//! since a thread that has entered a namespace is not trusted to come back.
//! [`FakeNetlink`] records the calls, keeps a model of the links, and can be told to fail
//! the Nth call, so the daemon's network logic is tested without root.

mod dump;
mod fake;
mod ops;
mod worker;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use fake::{FakeNetlink, NetlinkCall};
pub use worker::SystemNetlink;

use crate::addr::{Ipv4Net, Ipv6Net};
use crate::error::Result;

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

/// LXD's type of a link from its `ifinfomsg` link-layer type and flags (both readers).
fn link_type_name(link_layer: u16, flags: u32) -> &'static str {
    if link_layer == libc::ARPHRD_LOOPBACK {
        "loopback"
    } else if flags & libc::IFF_POINTOPOINT as u32 != 0 {
        "point-to-point"
    } else if link_layer == libc::ARPHRD_ETHER {
        "broadcast"
    } else {
        "unknown"
    }
}

/// LXD's scope of an address from its `ifaddrmsg` scope (both readers).
fn scope_name(addr: &std::net::IpAddr, scope: u8) -> &'static str {
    match (scope, addr) {
        (libc::RT_SCOPE_HOST, _) => "local",
        (libc::RT_SCOPE_LINK, _) => "link",
        (_, std::net::IpAddr::V4(a)) if a.is_loopback() => "local",
        (_, std::net::IpAddr::V6(a)) if a.is_loopback() => "local",
        _ => "global",
    }
}

/// Each interface of a namespace with its addresses.
pub type Interfaces = Vec<(Link, Vec<Address>)>;

/// The device a NIC is made as: a name, an address and an MTU inside the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: String,
    pub hwaddr: [u8; 6],
    pub mtu: Option<u32>,
    /// The instance's network namespace (`/proc/<pid>/ns/net`).
    pub netns: PathBuf,
}

/// The netlink operations of hutch. Without a namespace argument, an operation acts in the
/// host's (the caller's) network namespace.
pub trait Netlink: Send + Sync + fmt::Debug {
    /// Link `name`, asked for by name (not a dump of every link: with hundreds of
    /// containers' veths on the host, a dump per lookup is what a launch would cost).
    fn link(&self, name: &str) -> Result<Option<Link>>;
    /// Every link.
    fn links(&self) -> Result<Vec<Link>>;
    /// Every address.
    fn addresses(&self) -> Result<Vec<Address>>;
    /// The IPv4 prefixes of the main routing table and of every address (but the default
    /// route), and the IPv6 prefixes of global addresses: what a new subnet must avoid.
    fn used_prefixes(&self) -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)>;
    /// Creates bridge `name` if it does not exist, sets its MTU, and brings it up.
    fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link>;
    /// Makes the global addresses of link `index` exactly `wanted`.
    fn sync_addresses(&self, index: u32, wanted: &[(IpAddr, u8)]) -> Result<()>;
    /// Turns on the kernel's forwarding of IPv4 (or IPv6) between interfaces. A sysctl
    /// rather than netlink, but the same seam: the host's network configuration.
    fn enable_forwarding(&self, ipv6: bool) -> Result<()>;
    /// Deletes link `name`; absent is fine.
    fn delete_link(&self, name: &str) -> Result<()>;
    /// Creates a veth pair: `host_name` stays here, a port of bridge `master` and up; its
    /// peer is made directly in the instance's namespace, named and addressed (still down:
    /// a veth cannot open before its pair is joined).
    fn add_veth(&self, host_name: &str, master: Option<u32>, peer: &PeerSpec) -> Result<()>;
    /// Creates a macvlan (bridge mode) on `parent`, directly in the instance's namespace.
    fn add_macvlan(&self, parent: &str, peer: &PeerSpec) -> Result<()>;
    /// Inside the namespace at `netns`: brings the links `names` up, in order.
    fn set_up_in(&self, netns: &Path, names: &[String]) -> Result<()>;
    /// Inside the namespace at `netns`: deletes link `name` (a veth's host end goes too).
    fn delete_link_in(&self, netns: &Path, name: &str) -> Result<()>;
    /// The interfaces of each namespace of `netns`, in order (one thread for them all).
    fn interfaces_in(&self, netns: &[PathBuf]) -> Vec<Result<Interfaces>>;
}

/// Pairs each link with its addresses.
pub fn pair_up(links: Vec<Link>, addrs: Vec<Address>) -> Interfaces {
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

/// An IPv6 address as netlink wants it, for callers that hold a prefix.
pub fn ipv6(net: &Ipv6Net) -> (IpAddr, u8) {
    (IpAddr::V6(net.addr), net.prefix)
}

/// An IPv4 address as netlink wants it.
pub fn ipv4(net: &Ipv4Net) -> (IpAddr, u8) {
    (IpAddr::V4(net.addr), net.prefix)
}
