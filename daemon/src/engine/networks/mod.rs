//! Managed networks: a bridge, its dnsmasq and its nftables table, kept in step with the
//! database, brought back at start and supervised. What devices need of a network (its
//! configuration, a NIC's DHCP entry) they ask the engine for, through the methods here.

mod dnsmasq;
mod lifecycle;
mod query;
mod supervise;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use hutch_network::addr::valid_interface_name;
use hutch_network::config::DnsMode;
use hutch_network::dnsmasq::DnsmasqFiles;
use hutch_network::{nft, BridgeConfig, ProcessId};

pub use supervise::{start_networks, start_supervisor};

use super::Engine;
use crate::daemon::Daemon;
use crate::db::networks::NetworkRow;
use crate::error::{DaemonError, Result};

/// What managed networks keep between requests.
#[derive(Debug, Default)]
pub struct Live {
    /// The dnsmasq of each network, started or adopted by this daemon.
    dnsmasq: Mutex<HashMap<String, ProcessId>>,
    /// Held by whatever brings networks up or down (API calls, the supervisor), so that the
    /// supervisor never restarts the dnsmasq of a network that a request is removing.
    ops: Mutex<()>,
}

/// The files of network `name`'s dnsmasq.
fn files(d: &Daemon, name: &str) -> DnsmasqFiles {
    DnsmasqFiles::new(d.dir.join("networks").join(name))
}

/// The nftables table of network `name`.
fn table(d: &Daemon, name: &str) -> String {
    nft::network_table(&d.net.scope, name)
}

/// A network name is an interface name: letters, digits and `-`, starting with a letter.
pub fn validate_network_name(name: &str) -> Result<()> {
    let ok = valid_interface_name(name)
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        return Err(DaemonError::BadRequest(format!(
            "Invalid network name {name:?}: 1 to 15 letters, digits or '-', starting with a letter"
        )));
    }
    Ok(())
}

fn parse_row(row: &NetworkRow) -> Result<BridgeConfig> {
    Ok(BridgeConfig::parse(&row.put.config)?)
}

impl Engine {
    /// The configuration of managed network `name`, or `None` when there is none.
    pub(crate) fn network_config(&self, name: &str) -> Result<Option<BridgeConfig>> {
        self.d.db.network(name)?.as_ref().map(parse_row).transpose()
    }

    /// Gives `instance`'s NIC `device` on network `network` its DHCP entry: its MAC and,
    /// when `ipv4` is set, that address, reserved for the instance running or not (an
    /// address another instance holds is refused).
    pub(crate) fn reserve_nic(
        &self,
        network: &str,
        instance: &str,
        device: &str,
        hwaddr: &str,
        ipv4: Option<Ipv4Addr>,
    ) -> Result<()> {
        let files = files(&self.d, network);
        if let Some(ip) = ipv4 {
            let taken = hutch_network::dnsmasq::static_entries(&files)
                .into_iter()
                .find(|(_, addr, host)| *addr == ip && host != instance);
            if let Some((_, _, host)) = taken {
                return Err(DaemonError::BadRequest(format!(
                    "IP address {ip} is already in use on network {network:?} (by {host})"
                )));
            }
        }
        // With dns.mode dynamic or none, the client's own host name stands (LXD's way).
        let managed = self
            .network_config(network)?
            .is_none_or(|c| c.dns_mode == DnsMode::Managed);
        let entry = hutch_network::dnsmasq::host_entry(hwaddr, ipv4, managed.then_some(instance));
        Ok(hutch_network::dnsmasq::write_host_entry(
            &files, instance, device, &entry,
        )?)
    }

    /// Removes the DHCP entry of `instance`'s NIC `device` on network `network`, and
    /// releases its lease.
    pub(crate) fn release_nic(&self, network: &str, instance: &str, device: &str) {
        let files = files(&self.d, network);
        let macs = hutch_network::dnsmasq::entry_hwaddrs(&files, instance, Some(device));
        self.release_leases(network, &files, &macs);
        hutch_network::dnsmasq::remove_host_entry(&files, instance, device);
    }

    /// Removes every DHCP entry of `instance` (deleted or renamed) on every network, and
    /// releases its leases.
    pub(crate) fn release_instance(&self, instance: &str) -> Result<()> {
        for net in self.d.db.networks()? {
            let files = files(&self.d, &net.name);
            let macs = hutch_network::dnsmasq::entry_hwaddrs(&files, instance, None);
            self.release_leases(&net.name, &files, &macs);
            hutch_network::dnsmasq::remove_host_entries(&files, instance);
        }
        Ok(())
    }

    /// Tells `network`'s dnsmasq that the IPv4 leases of `macs` are free (a DHCPRELEASE per
    /// lease, as LXD sends): it would otherwise keep each for its hour, and create/delete
    /// churn would run the range dry. A release that fails only leaves the lease to expire.
    fn release_leases(&self, network: &str, files: &DnsmasqFiles, macs: &[String]) {
        if macs.is_empty() {
            return;
        }
        let Ok(Some(cfg)) = self.network_config(network) else {
            return;
        };
        let Some(v4) = cfg.ipv4 else { return };
        let leases = hutch_network::dnsmasq::read_leases(files);
        for lease in leases.iter().filter(|l| macs.contains(&l.hwaddr)) {
            let Ok(address) = lease.address.parse::<Ipv4Addr>() else {
                continue;
            };
            if let Err(e) = hutch_network::dhcp_release::release(
                network,
                v4.addr,
                address,
                &lease.hwaddr,
                lease.client_id.as_deref(),
            ) {
                tracing::warn!(network, %address, error = %e, "release a DHCP lease");
            }
        }
    }
}
