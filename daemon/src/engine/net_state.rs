//! The engine's network runners (netlink, nftables, helper processes), as injected, and the
//! live state networks and devices keep between requests. Each side owns its part; neither
//! reaches into the other's.

use std::sync::Arc;

use hutch_network::{Netlink, Nft, Processes};

use super::devices::Proxies;
use super::networks::Live;

/// What the daemon holds for networking.
pub struct NetState {
    pub(super) nft: Box<dyn Nft>,
    pub(super) netlink: Arc<dyn Netlink>,
    pub(super) processes: Arc<dyn Processes>,
    /// Prefix of this daemon's nftables tables.
    pub(super) scope: String,
    /// Managed networks' dnsmasq processes and the lock of their changes.
    pub(super) networks: Live,
    /// Instances' running proxies.
    pub(super) proxies: Proxies,
}

impl std::fmt::Debug for NetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetState")
            .field("scope", &self.scope)
            .field("netlink", &self.netlink)
            .field("processes", &self.processes)
            .finish()
    }
}

impl NetState {
    /// `scope` prefixes the daemon's nftables tables (unique per state directory).
    pub fn new(
        nft: Box<dyn Nft>,
        netlink: Arc<dyn Netlink>,
        processes: Arc<dyn Processes>,
        scope: &str,
    ) -> Self {
        NetState {
            nft,
            netlink,
            processes,
            scope: scope.to_string(),
            networks: Live::default(),
            proxies: Proxies::default(),
        }
    }
}

/// A mutex guard, whether or not a holder panicked.
pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An interface as the API shows it (a network's state, an entry of an instance's).
pub(super) fn interface_state(
    link: &hutch_network::netlink::Link,
    addrs: &[hutch_network::netlink::Address],
) -> hutch_api::network::InterfaceState {
    use hutch_api::network::{InterfaceAddress, InterfaceCounters, InterfaceState};
    InterfaceState {
        addresses: addrs
            .iter()
            .map(|a| InterfaceAddress {
                family: if a.addr.is_ipv4() { "inet" } else { "inet6" }.into(),
                address: a.addr.to_string(),
                netmask: a.prefix.to_string(),
                scope: a.scope.clone(),
            })
            .collect(),
        counters: InterfaceCounters {
            bytes_received: link.rx_bytes,
            bytes_sent: link.tx_bytes,
            packets_received: link.rx_packets,
            packets_sent: link.tx_packets,
        },
        hwaddr: hutch_network::addr::format_hwaddr(&link.hwaddr),
        host_name: String::new(),
        mtu: link.mtu,
        state: if link.up { "up" } else { "down" }.into(),
        kind: link.link_type.clone(),
    }
}

/// Fake network runners for unit and router tests: nothing of the host is touched, and
/// every call lands in one journal.
#[cfg(test)]
pub(crate) mod fakes {
    use std::path::Path;
    use std::sync::Arc;

    use hutch_network::{FakeNetlink, FakeNft, FakeProcesses, Journal};

    use crate::daemon::{Daemon, Runners};
    use crate::engine::Engine;
    use crate::events::EventHub;

    /// The fakes, kept by the test to look at or to make fail.
    #[derive(Clone)]
    pub struct NetFakes {
        pub netlink: Arc<FakeNetlink>,
        pub nft: Arc<FakeNft>,
        pub processes: Arc<FakeProcesses>,
        pub journal: Journal,
    }

    impl NetFakes {
        pub fn new() -> Self {
            let f = NetFakes {
                netlink: Arc::new(FakeNetlink::new()),
                nft: Arc::new(FakeNft::default()),
                processes: Arc::new(FakeProcesses::new()),
                journal: Journal::new(),
            };
            f.netlink.journal_to(&f.journal);
            f.nft.journal_to(&f.journal);
            f.processes.journal_to(&f.journal);
            f
        }

        /// The system's storage runner with these fakes for the network.
        pub fn runners(&self) -> Runners {
            Runners {
                storage: Arc::new(hutch_storage::SystemRunner),
                mounts: Arc::new(hutch_storage::SystemMounter),
                nft: Box::new(self.nft.clone()),
                netlink: self.netlink.clone(),
                processes: self.processes.clone(),
            }
        }

        /// An engine over state directory `dir` with these fakes.
        pub fn engine(&self, dir: &Path) -> Engine {
            let d = Daemon::open_with(
                dir,
                "/nonexistent/hutchd".into(),
                EventHub::new(),
                self.runners(),
            )
            .expect("open daemon");
            Engine::new(d)
        }
    }
}
