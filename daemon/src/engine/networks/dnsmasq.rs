//! Each managed network's dnsmasq: started, found again after a daemon restart, stopped;
//! and the leases it hands out.

use std::collections::HashMap;
use std::time::Duration;

use hutch_api::network::NetworkLease;
use hutch_network::config::DnsMode;
use hutch_network::{dnsmasq, BridgeConfig, ProcessId};

use super::files;
use crate::daemon::Daemon;
use crate::engine::net_state::lock;
use crate::error::Result;

/// How long a dnsmasq has to leave after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// Whether a network with `cfg` needs a dnsmasq: it does once it has an address.
pub(super) fn needs_dnsmasq(cfg: &BridgeConfig) -> bool {
    cfg.ipv4.is_some() || cfg.ipv6.is_some()
}

/// (Re)starts the dnsmasq of network `name` for `cfg`; none runs when it needs none.
pub(super) fn restart(d: &Daemon, name: &str, cfg: &BridgeConfig) -> Result<()> {
    stop(d, name);
    if !needs_dnsmasq(cfg) {
        return Ok(());
    }
    let files = files(d, name);
    // Entries written under another dns.mode follow this one.
    dnsmasq::name_host_entries(&files, cfg.dns_mode == DnsMode::Managed)?;
    let id = d.net.processes.spawn_dnsmasq(name, cfg, &files)?;
    lock(&d.net.networks.dnsmasq).insert(name.to_string(), id);
    Ok(())
}

/// Stops the dnsmasq of network `name`, started by this daemon or adopted by pid file.
pub(super) fn stop(d: &Daemon, name: &str) {
    let files = files(d, name);
    // Taken out of the map first: the map is never locked while a process is waited for.
    let ours = lock(&d.net.networks.dnsmasq).remove(name);
    let mut ids: Vec<ProcessId> = ours.into_iter().collect();
    ids.extend(
        d.net
            .processes
            .find_dnsmasq(name, &files)
            .filter(|id| !ids.contains(id)),
    );
    if !ids.is_empty() {
        d.net.processes.stop(&ids, GRACE);
    }
    let _ = std::fs::remove_file(files.pid_file());
}

/// Whether network `name` has a live dnsmasq: the one this daemon started, or else the one
/// its pid file names (which it adopts).
pub(super) fn running(d: &Daemon, name: &str) -> bool {
    let ours = lock(&d.net.networks.dnsmasq).get(name).copied();
    if ours.is_some_and(|id| d.net.processes.alive(id)) {
        return true;
    }
    match d.net.processes.find_dnsmasq(name, &files(d, name)) {
        Some(id) => {
            lock(&d.net.networks.dnsmasq).insert(name.to_string(), id);
            true
        }
        None => false,
    }
}

/// Whether network `name` has a live dnsmasq with the arguments `cfg` gives one now. One
/// adopted from an older hutchd may lack some (`--dhcp-lease-max`, before it existed).
pub(super) fn current(d: &Daemon, name: &str, cfg: &BridgeConfig) -> bool {
    if !running(d, name) {
        return false;
    }
    let Some(id) = lock(&d.net.networks.dnsmasq).get(name).copied() else {
        return false;
    };
    d.net.processes.arguments(id) == Some(dnsmasq::dnsmasq_args(name, cfg, &files(d, name)))
}

/// Forgets the dnsmasq processes that have exited (the supervisor restarts them).
pub(super) fn forget_dead(d: &Daemon) {
    let ids: Vec<(String, ProcessId)> = lock(&d.net.networks.dnsmasq)
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (name, id) in ids {
        if !d.net.processes.alive(id) {
            lock(&d.net.networks.dnsmasq).remove(&name);
        }
    }
}

/// The static entries of NICs with `ipv4.address`, then dnsmasq's dynamic leases (named
/// after their NIC's instance where the client sent no name).
pub(super) fn leases(d: &Daemon, name: &str) -> Vec<NetworkLease> {
    let files = files(d, name);
    let statics = dnsmasq::static_entries(&files);
    let names: HashMap<String, String> = dnsmasq::entry_instances(&files).into_iter().collect();
    let lease = |hostname: String, hwaddr: String, address: String, kind: &str| NetworkLease {
        hostname,
        hwaddr,
        address,
        kind: kind.into(),
        location: "none".into(),
    };
    let mut out: Vec<NetworkLease> = statics
        .iter()
        .map(|(mac, ip, host)| lease(host.clone(), mac.clone(), ip.to_string(), "static"))
        .collect();
    for l in dnsmasq::read_leases(&files) {
        if out.iter().any(|s| s.address == l.address) {
            continue;
        }
        let host = if l.hostname.is_empty() {
            names.get(&l.hwaddr).cloned().unwrap_or_default()
        } else {
            l.hostname
        };
        out.push(lease(host, l.hwaddr, l.address, "dynamic"));
    }
    out
}
