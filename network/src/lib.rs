//! Networking for hutch: managed bridges (rtnetlink) with one dnsmasq each (DHCP, DNS) and
//! one nftables table each (NAT, forwarding); NICs (veth on a bridge, macvlan) made inside
//! an instance's network namespace; and proxy devices, forwarded by the kernel (DNAT) or by
//! a userspace forwarder that crosses namespaces.

pub mod addr;
pub mod bridge;
pub mod config;
pub mod dhcp_release;
pub mod dnsmasq;
mod error;
mod journal;
pub mod netlink;
pub mod nft;
pub mod nic;
pub mod process;
pub mod proxy;

pub use config::BridgeConfig;
pub use error::{ErrorKind, NetworkError, Result};
pub use journal::Journal;
pub use netlink::{FakeNetlink, Netlink, NetlinkCall, SystemNetlink};
pub use nft::{FakeNft, Nft, SystemNft};
pub use process::{FakeProcesses, ProcessCall, ProcessId, Processes, SystemProcesses};
