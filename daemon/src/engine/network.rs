//! Managed networks: a bridge, its dnsmasq and its nftables table, kept in step with the
//! database, brought back at start and supervised. Instances' NICs and proxies are in
//! `devices`.

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use hutch_api::network::{
    InterfaceAddress, InterfaceCounters, InterfaceState, Network, NetworkLease, NetworkPut,
    NetworksPost,
};
use hutch_api::profile::Devices;
use hutch_network::addr::{valid_interface_name, Ipv4Net, Ipv6Net};
use hutch_network::dnsmasq::{self, DnsmasqFiles};
use hutch_network::netlink::{Address, Link};
use hutch_network::nft::{self, Nft};
use hutch_network::{bridge, config, BridgeConfig};
use serde_json::json;

use super::spec::expand;
use crate::daemon::{AppState, Daemon};
use crate::db::networks::NetworkRow;
use crate::error::{DaemonError, Result};

/// The daemon's live network state: what it must remember between requests.
pub struct NetState {
    pub nft: Box<dyn Nft>,
    /// Prefix of this daemon's nftables tables.
    pub(super) scope: String,
    /// dnsmasq processes this daemon started, reaped by the supervisor.
    dnsmasq: Mutex<HashMap<String, Child>>,
    /// Held by whatever brings networks up or down (API calls, the supervisor), so that the
    /// supervisor never restarts the dnsmasq of a network that a request is removing.
    ops: Mutex<()>,
    /// Running proxies by instance.
    pub(super) proxies: Mutex<HashMap<String, super::devices::InstanceProxies>>,
}

impl std::fmt::Debug for NetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetState")
            .field("scope", &self.scope)
            .finish()
    }
}

impl NetState {
    pub fn new(nft: Box<dyn Nft>, scope: &str) -> Self {
        NetState {
            nft,
            scope: scope.to_string(),
            dnsmasq: Mutex::default(),
            ops: Mutex::default(),
            proxies: Mutex::default(),
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn network_files(d: &Daemon, name: &str) -> DnsmasqFiles {
    DnsmasqFiles::new(d.dir.join("networks").join(name))
}

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

pub(super) fn parse_row(row: &NetworkRow) -> Result<BridgeConfig> {
    Ok(BridgeConfig::parse(&row.put.config)?)
}

/// Refuses a subnet that overlaps another network's or a route of the host (but the
/// network's own current one).
fn check_overlaps(d: &Daemon, name: &str, cfg: &BridgeConfig, host4: &[Ipv4Net]) -> Result<()> {
    let Some(v4) = cfg.ipv4 else { return Ok(()) };
    let mut own: Option<Ipv4Net> = None;
    for other in d.db.networks()? {
        let Ok(ocfg) = parse_row(&other) else {
            continue;
        };
        let Some(o4) = ocfg.ipv4 else { continue };
        if other.name == name {
            own = Some(o4);
            continue;
        }
        if o4.overlaps(&v4) {
            return Err(DaemonError::BadRequest(format!(
                "Subnet {}/{} overlaps with network {:?} ({}/{})",
                v4.network(),
                v4.prefix,
                other.name,
                o4.network(),
                o4.prefix
            )));
        }
    }
    for h in host4 {
        // The bridge's own address and route, when it is being changed.
        let is_own = own.is_some_and(|o| o.contains(h.network()) && h.prefix >= o.prefix);
        if !is_own && h.overlaps(&v4) {
            return Err(DaemonError::BadRequest(format!(
                "Subnet {}/{} overlaps with {}/{}, already in use on the host",
                v4.network(),
                v4.prefix,
                h.network(),
                h.prefix
            )));
        }
    }
    Ok(())
}

/// Resolves `auto` addresses against the host's routes and the other networks.
fn resolve(d: &Daemon, config: &mut BTreeMap<String, String>) -> Result<Vec<Ipv4Net>> {
    let (mut used4, mut used6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = bridge::host_used_prefixes()?;
    let host4 = used4.clone();
    for other in d.db.networks()? {
        if let Ok(c) = parse_row(&other) {
            used4.extend(c.ipv4);
            used6.extend(c.ipv6);
        }
    }
    config::resolve_auto(config, &used4, &used6)?;
    Ok(host4)
}

/// `POST /1.0/networks`: records the network, then brings it up; a failure undoes both.
pub fn create_network(d: &Daemon, req: NetworksPost) -> Result<()> {
    let _ops = lock(&d.net.ops);
    let name = req.name.clone();
    validate_network_name(&name)?;
    if !matches!(req.kind.as_str(), "" | "bridge") {
        return Err(DaemonError::BadRequest(format!(
            "Network type {:?} is not supported (only \"bridge\")",
            req.kind
        )));
    }
    if d.db.network(&name)?.is_some() {
        return Err(DaemonError::Conflict("The network already exists".into()));
    }
    if bridge::link(&name)?.is_some() {
        return Err(DaemonError::BadRequest(format!(
            "The network already exists: an interface named {name:?} exists on the host"
        )));
    }
    let mut put = req.put;
    let host4 = resolve(d, &mut put.config)?;
    let cfg = BridgeConfig::parse(&put.config)?;
    check_overlaps(d, &name, &cfg, &host4)?;
    d.db.insert_network(&NetworkRow {
        name: name.clone(),
        kind: "bridge".into(),
        put,
    })?;
    if let Err(e) = bring_up(d, &name, &cfg) {
        teardown(d, &name);
        d.db.delete_network(&name)?;
        return Err(e);
    }
    d.events.lifecycle(
        "network-created",
        &format!("/1.0/networks/{name}"),
        json!({}),
    );
    Ok(())
}

fn bring_up(d: &Daemon, name: &str, cfg: &BridgeConfig) -> Result<()> {
    bridge::apply(name, cfg, &*d.net.nft, &table(d, name))?;
    restart_dnsmasq(d, name, cfg)
}

fn restart_dnsmasq(d: &Daemon, name: &str, cfg: &BridgeConfig) -> Result<()> {
    let files = network_files(d, name);
    stop_dnsmasq(d, name);
    if cfg.ipv4.is_none() && cfg.ipv6.is_none() {
        return Ok(());
    }
    let mut child = dnsmasq::spawn(name, cfg, &files)?;
    if let Err(e) = dnsmasq::wait_ready(&files, name, &mut child, Duration::from_secs(10)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.into());
    }
    lock(&d.net.dnsmasq).insert(name.to_string(), child);
    Ok(())
}

/// Stops the dnsmasq of network `name`, started by this daemon or adopted by pid file.
fn stop_dnsmasq(d: &Daemon, name: &str) {
    // Taken out of the map first: the map is never locked while a process is waited for.
    let child = lock(&d.net.dnsmasq).remove(name);
    dnsmasq::stop(&network_files(d, name), name, child);
}

/// Whether network `name` has a live dnsmasq: the child this daemon started, or else the
/// process its pid file names.
fn dnsmasq_running(d: &Daemon, name: &str) -> bool {
    let ours = lock(&d.net.dnsmasq)
        .get_mut(name)
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    ours || dnsmasq::running_pid(&network_files(d, name), name).is_some()
}

/// Removes everything of network `name` from the host; what is gone already is fine.
fn teardown(d: &Daemon, name: &str) {
    stop_dnsmasq(d, name);
    if let Err(e) = bridge::remove(name, &*d.net.nft, &table(d, name)) {
        tracing::warn!(network = name, error = %crate::chain(&e), "network teardown");
    }
    let _ = std::fs::remove_dir_all(network_files(d, name).dir);
}

/// PUT/PATCH: the new config, applied to the live bridge; on failure the old one is back.
pub fn update_network(d: &Daemon, name: &str, mut put: NetworkPut) -> Result<()> {
    let _ops = lock(&d.net.ops);
    let row = d.db.network_or_404(name)?;
    for key in ["ipv4.address", "ipv6.address"] {
        put.config
            .entry(key.into())
            .or_insert_with(|| "none".into());
    }
    let host4 = resolve(d, &mut put.config)?;
    let cfg = BridgeConfig::parse(&put.config)?;
    check_overlaps(d, name, &cfg, &host4)?;
    d.db.update_network(name, &put)?;
    if let Err(e) = bring_up(d, name, &cfg) {
        d.db.update_network(name, &row.put)?;
        if let Ok(old) = parse_row(&row) {
            let _ = bring_up(d, name, &old);
        }
        return Err(e);
    }
    d.events.lifecycle(
        "network-updated",
        &format!("/1.0/networks/{name}"),
        json!({}),
    );
    Ok(())
}

pub fn delete_network(d: &Daemon, name: &str) -> Result<()> {
    let _ops = lock(&d.net.ops);
    d.db.network_or_404(name)?;
    if !used_by(d, name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The network is currently in use".into(),
        ));
    }
    teardown(d, name);
    d.db.delete_network(name)?;
    d.events.lifecycle(
        "network-deleted",
        &format!("/1.0/networks/{name}"),
        json!({}),
    );
    Ok(())
}

pub fn rename_network(d: &Daemon, name: &str, new: &str) -> Result<()> {
    let _ops = lock(&d.net.ops);
    let row = d.db.network_or_404(name)?;
    validate_network_name(new)?;
    if !used_by(d, name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The network is currently in use".into(),
        ));
    }
    if d.db.network(new)?.is_some() || bridge::link(new)?.is_some() {
        return Err(DaemonError::Conflict(format!(
            "Network {new:?} already exists"
        )));
    }
    let cfg = parse_row(&row)?;
    teardown(d, name);
    d.db.insert_network(&NetworkRow {
        name: new.to_string(),
        ..row.clone()
    })?;
    d.db.delete_network(name)?;
    if let Err(e) = bring_up(d, new, &cfg) {
        teardown(d, new);
        d.db.delete_network(new)?;
        d.db.insert_network(&row)?;
        let _ = bring_up(d, name, &cfg);
        return Err(e);
    }
    d.events.lifecycle(
        "network-renamed",
        &format!("/1.0/networks/{new}"),
        json!({"old_name": name}),
    );
    Ok(())
}

pub(super) fn nic_devices(
    devices: &Devices,
) -> impl Iterator<Item = (&String, &BTreeMap<String, String>)> {
    devices
        .iter()
        .filter(|(_, dev)| dev.get("type").map(String::as_str) == Some("nic"))
}

pub(super) fn proxy_devices(
    devices: &Devices,
) -> impl Iterator<Item = (&String, &BTreeMap<String, String>)> {
    devices
        .iter()
        .filter(|(_, dev)| dev.get("type").map(String::as_str) == Some("proxy"))
}

pub(super) fn opt<'a>(dev: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    dev.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// The bridge a NIC plugs into: its managed network, or its `parent` when bridged.
fn nic_uses(dev: &BTreeMap<String, String>, network: &str) -> bool {
    opt(dev, "network") == Some(network)
        || (opt(dev, "nictype") == Some("bridged") && opt(dev, "parent") == Some(network))
}

/// Instances and profiles with a NIC on network `name`.
pub fn used_by(d: &Daemon, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in d.db.profile_names()? {
        if let Some(put) = d.db.profile(&p)? {
            if nic_devices(&put.devices).any(|(_, dev)| nic_uses(dev, name)) {
                out.push(format!("/1.0/profiles/{p}"));
            }
        }
    }
    for row in d.db.instances()? {
        let expanded = expand(d, &row)?;
        if nic_devices(&expanded.devices).any(|(_, dev)| nic_uses(dev, name)) {
            out.push(format!("/1.0/instances/{}", row.name));
        }
    }
    Ok(out)
}

pub fn network_object(d: &Daemon, row: &NetworkRow) -> Result<Network> {
    Ok(Network {
        name: row.name.clone(),
        put: row.put.clone(),
        kind: row.kind.clone(),
        managed: true,
        status: "Created".into(),
        used_by: used_by(d, &row.name)?,
        locations: vec!["none".into()],
    })
}

/// A host interface that hutch does not manage, as LXD lists it.
pub fn unmanaged_object(link: &Link) -> Network {
    let kind = match (link.kind.as_str(), link.link_type.as_str()) {
        ("bridge", _) => "bridge",
        (_, "loopback") => "loopback",
        ("", _) => "physical",
        _ => "unknown",
    };
    Network {
        name: link.name.clone(),
        put: NetworkPut::default(),
        kind: kind.into(),
        managed: false,
        status: String::new(),
        used_by: Vec::new(),
        locations: vec!["none".into()],
    }
}

/// `GET .../leases`: the static entries of NICs with `ipv4.address`, then dnsmasq's
/// dynamic leases (named after their instance where the client sent no name).
pub fn leases(d: &Daemon, name: &str) -> Result<Vec<NetworkLease>> {
    d.db.network_or_404(name)?;
    let files = network_files(d, name);
    let statics = dnsmasq::static_entries(&files);
    let mut names: HashMap<String, String> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(files.hosts_dir()) {
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split(',').collect();
                if let (Some(mac), Some(host)) = (f.first(), f.last()) {
                    names.insert(mac.to_string(), host.to_string());
                }
            }
        }
    }
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
    Ok(out)
}

pub(super) fn interface_state(link: &Link, addrs: &[Address]) -> InterfaceState {
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

/// `GET /1.0/networks/<name>/state`, for managed and host interfaces alike.
pub fn network_state(name: &str) -> Result<InterfaceState> {
    let (links, addrs) =
        hutch_network::netlink::with_netlink(None, |nl| Ok((nl.links()?, nl.addresses()?)))?;
    let link = links
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| DaemonError::NotFound("Network not found".into()))?;
    let own: Vec<Address> = addrs
        .into_iter()
        .filter(|a| a.index == link.index)
        .collect();
    Ok(interface_state(link, &own))
}

/// Every host interface, for `recursion=1` listings of unmanaged networks.
pub fn host_links() -> Result<Vec<Link>> {
    Ok(bridge::host_links()?)
}

/// At startup: every network brought back (bridge, addresses, rules, a dnsmasq adopted or
/// restarted), and tables of this daemon that no network or instance owns removed.
pub fn start_networks(d: &Daemon) {
    let _ops = lock(&d.net.ops);
    let rows = d.db.networks().unwrap_or_default();
    if let Ok(tables) = d.net.nft.tables() {
        let wanted: Vec<String> = rows.iter().map(|r| table(d, &r.name)).collect();
        let ours = format!("{}_", d.net.scope.replace('-', "_"));
        for (family, t) in tables {
            if family == "inet" && t.starts_with(&ours) && !wanted.contains(&t) {
                let _ = d.net.nft.apply(&nft::delete_table_script(&t));
            }
        }
    }
    for row in rows {
        let result = parse_row(&row).and_then(|cfg| {
            bridge::apply(&row.name, &cfg, &*d.net.nft, &table(d, &row.name))?;
            let needs = cfg.ipv4.is_some() || cfg.ipv6.is_some();
            if needs && !dnsmasq_running(d, &row.name) {
                restart_dnsmasq(d, &row.name, &cfg)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!(network = row.name, error = %e.chain(), "bring up network");
        }
    }
}

/// Every two seconds: a dead dnsmasq is reaped and restarted, proxies of instances that
/// stopped on their own are removed, and memory left free by bursts goes back to the kernel.
/// `HUTCH_SUPERVISE_MS` shortens the period, so that tests can race the supervisor
/// against requests.
pub fn start_supervisor(d: AppState) {
    let period = std::env::var("HUTCH_SUPERVISE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let d2 = d.clone();
            let _ = tokio::task::spawn_blocking(move || supervise_once(&d2)).await;
        }
    });
}

fn supervise_once(d: &Daemon) {
    release_free_memory();
    lock(&d.net.dnsmasq).retain(|_, child| !matches!(child.try_wait(), Ok(Some(_))));
    // Rows are read under the lock: a network being created or deleted is not looked at
    // halfway.
    let _ops = lock(&d.net.ops);
    for row in d.db.networks().unwrap_or_default() {
        let Ok(cfg) = parse_row(&row) else { continue };
        if cfg.ipv4.is_none() && cfg.ipv6.is_none() {
            continue;
        }
        if !dnsmasq_running(d, &row.name) {
            tracing::warn!(network = row.name, "dnsmasq is not running; restarting it");
            if let Err(e) = restart_dnsmasq(d, &row.name, &cfg) {
                tracing::error!(network = row.name, error = %e.chain(), "restart dnsmasq");
            }
        }
    }
    let with_proxies: Vec<String> = lock(&d.net.proxies).keys().cloned().collect();
    for name in with_proxies {
        if super::runtime_info(d, &name).pid <= 0 {
            super::devices::stop_proxies(d, &name);
        }
    }
}

/// Hands memory that bursts (a 1 GB exec, a 100 MB push) left free in glibc's per-thread
/// arenas back to the kernel, so the daemon's footprint follows its working set.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
