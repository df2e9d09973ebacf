//! Managed networks (a bridge, its dnsmasq and its nftables table) and the network devices
//! of instances (NICs and proxies), tying hutch-network to the database and the lifecycle.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use hutch_api::network::{
    InterfaceAddress, InterfaceCounters, InterfaceState, Network, NetworkLease, NetworkPut,
    NetworksPost,
};
use hutch_api::profile::Devices;
use hutch_network::addr::{
    random_hwaddr, random_veth_name, valid_interface_name, Ipv4Net, Ipv6Net,
};
use hutch_network::dnsmasq::{self, DnsmasqFiles};
use hutch_network::netlink::{Address, Link};
use hutch_network::nft::{self, DnatRule, Nft};
use hutch_network::nic::{self, NicKind, NicSpec};
use hutch_network::proxy::{check_pair, Forwarder, Netns, ProxyAddr};
use hutch_network::{bridge, config, BridgeConfig, NetworkError};
use serde_json::{json, Value};

use super::spec::{expand, flag, Expanded};
use crate::daemon::{AppState, Daemon};
use crate::db::instances::InstanceRow;
use crate::db::networks::NetworkRow;
use crate::error::{DaemonError, Result};

/// The daemon's live network state: what it must remember between requests.
pub struct NetState {
    pub nft: Box<dyn Nft>,
    /// Prefix of this daemon's nftables tables.
    scope: String,
    /// dnsmasq processes this daemon started, reaped by the supervisor.
    dnsmasq: Mutex<HashMap<String, Child>>,
    /// Running proxies by instance: userspace forwarders, and whether a DNAT table exists.
    proxies: Mutex<HashMap<String, InstanceProxies>>,
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
            proxies: Mutex::default(),
        }
    }
}

impl From<NetworkError> for DaemonError {
    fn from(e: NetworkError) -> Self {
        if e.is_invalid() {
            DaemonError::BadRequest(e.to_string())
        } else {
            DaemonError::Internal(crate::chain(&e))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

fn parse_row(row: &NetworkRow) -> Result<BridgeConfig> {
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
    dnsmasq::stop(&files, name);
    if let Some(mut old) = lock(&d.net.dnsmasq).remove(name) {
        let _ = old.wait();
    }
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

/// Removes everything of network `name` from the host; what is gone already is fine.
fn teardown(d: &Daemon, name: &str) {
    let files = network_files(d, name);
    dnsmasq::stop(&files, name);
    if let Some(mut old) = lock(&d.net.dnsmasq).remove(name) {
        let _ = old.wait();
    }
    if let Err(e) = bridge::remove(name, &*d.net.nft, &table(d, name)) {
        tracing::warn!(network = name, error = %crate::chain(&e), "network teardown");
    }
    let _ = std::fs::remove_dir_all(&files.dir);
}

/// PUT/PATCH: the new config, applied to the live bridge; on failure the old one is back.
pub fn update_network(d: &Daemon, name: &str, mut put: NetworkPut) -> Result<()> {
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

fn nic_devices(devices: &Devices) -> impl Iterator<Item = (&String, &BTreeMap<String, String>)> {
    devices
        .iter()
        .filter(|(_, dev)| dev.get("type").map(String::as_str) == Some("nic"))
}

fn proxy_devices(devices: &Devices) -> impl Iterator<Item = (&String, &BTreeMap<String, String>)> {
    devices
        .iter()
        .filter(|(_, dev)| dev.get("type").map(String::as_str) == Some("proxy"))
}

fn opt<'a>(dev: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
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

fn interface_state(link: &Link, addrs: &[Address]) -> InterfaceState {
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

/// Checks the `nic` and `proxy` devices of an instance or profile.
pub fn validate_devices(d: &Daemon, devices: &Devices) -> Result<()> {
    let bad =
        |dev: &str, why: String| DaemonError::BadRequest(format!("Invalid device {dev:?}: {why}"));
    for (devname, dev) in nic_devices(devices) {
        match (opt(dev, "network"), opt(dev, "nictype")) {
            (Some(net), None) => {
                let row =
                    d.db.network(net)?
                        .ok_or_else(|| bad(devname, format!("network {net:?} not found")))?;
                if let Some(ip) = opt(dev, "ipv4.address") {
                    let ip: Ipv4Addr = ip
                        .parse()
                        .map_err(|_| bad(devname, format!("{ip:?} is not an IPv4 address")))?;
                    let cfg = parse_row(&row)?;
                    let ok = cfg.ipv4.is_some_and(|n| {
                        n.contains(ip) && n.addr != ip && ip != n.network() && ip != n.broadcast()
                    });
                    if !ok {
                        return Err(bad(
                            devname,
                            format!(
                                "ipv4.address {ip} is not a free host address of network {net:?}"
                            ),
                        ));
                    }
                }
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    devname,
                    "network and nictype cannot both be set".into(),
                ))
            }
            (None, Some("bridged" | "macvlan")) => {
                let parent = opt(dev, "parent")
                    .ok_or_else(|| bad(devname, "nictype needs a parent".into()))?;
                if !valid_interface_name(parent) {
                    return Err(bad(devname, format!("invalid parent {parent:?}")));
                }
                if opt(dev, "ipv4.address").is_some() {
                    return Err(bad(devname, "ipv4.address needs a managed network".into()));
                }
            }
            (None, Some(t)) => return Err(bad(devname, format!("unsupported nictype {t:?}"))),
            (None, None) => return Err(bad(devname, "a nic needs network or nictype".into())),
        }
        if let Some(n) = opt(dev, "name") {
            if !valid_interface_name(n) {
                return Err(bad(devname, format!("invalid interface name {n:?}")));
            }
        }
        if let Some(n) = opt(dev, "host_name") {
            if !valid_interface_name(n) {
                return Err(bad(devname, format!("invalid host_name {n:?}")));
            }
        }
        if let Some(mac) = opt(dev, "hwaddr") {
            hutch_network::addr::parse_hwaddr(mac)?;
        }
        if let Some(mtu) = opt(dev, "mtu") {
            if !mtu.parse::<u32>().is_ok_and(|m| (68..=65535).contains(&m)) {
                return Err(bad(devname, format!("invalid mtu {mtu:?}")));
            }
        }
    }
    for (devname, dev) in proxy_devices(devices) {
        let listen: ProxyAddr = opt(dev, "listen")
            .ok_or_else(|| bad(devname, "a proxy needs listen".into()))?
            .parse()?;
        let connect: ProxyAddr = opt(dev, "connect")
            .ok_or_else(|| bad(devname, "a proxy needs connect".into()))?
            .parse()?;
        check_pair(&listen, &connect)?;
        match opt(dev, "bind") {
            None | Some("host") | Some("instance") => {}
            Some(b) => {
                return Err(bad(
                    devname,
                    format!("bind must be host or instance, not {b:?}"),
                ))
            }
        }
        if flag(dev, "nat") {
            if opt(dev, "bind") == Some("instance") {
                return Err(bad(devname, "nat needs bind=host".into()));
            }
            if listen.addr.is_loopback() {
                return Err(bad(
                    devname,
                    "nat cannot listen on a loopback address".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The interface name inside the instance: `name`, else the device's own name.
fn interface_name(devname: &str, dev: &BTreeMap<String, String>) -> String {
    match opt(dev, "name") {
        Some(n) => n.to_string(),
        None if valid_interface_name(devname) => devname.to_string(),
        None => "eth0".into(),
    }
}

/// The NICs of `devices` ready to plug: stable MACs (kept in `volatile.<dev>.hwaddr`),
/// host-side names (in `volatile.<dev>.host_name`) and dnsmasq host entries written.
fn prepare_nics<'a>(
    d: &Daemon,
    row: &InstanceRow,
    devices: impl Iterator<Item = (&'a String, &'a BTreeMap<String, String>)>,
) -> Result<Vec<NicSpec>> {
    let mut out = Vec::new();
    for (devname, dev) in devices {
        let hw_key = format!("volatile.{devname}.hwaddr");
        let hwaddr = match opt(dev, "hwaddr").or(row.config.get(&hw_key).map(String::as_str)) {
            Some(mac) => mac.to_string(),
            None => {
                let mac = random_hwaddr();
                d.db.set_instance_config_key(&row.name, &hw_key, Some(&mac))?;
                mac
            }
        };
        let mut mtu = opt(dev, "mtu").and_then(|m| m.parse().ok());
        let kind = match (opt(dev, "network"), opt(dev, "nictype"), opt(dev, "parent")) {
            (Some(net), _, _) => {
                let netrow = d.db.network(net)?.ok_or_else(|| {
                    DaemonError::BadRequest(format!(
                        "Network {net:?} of device {devname:?} not found"
                    ))
                })?;
                let cfg = parse_row(&netrow)?;
                mtu = mtu.or(cfg.mtu);
                let static_ip = opt(dev, "ipv4.address").and_then(|ip| ip.parse().ok());
                dnsmasq::write_host_entry(
                    &network_files(d, net),
                    &row.name,
                    devname,
                    &dnsmasq::host_entry(&hwaddr, static_ip, &row.name),
                )?;
                NicKind::Bridged {
                    bridge: net.to_string(),
                    host_name: host_name(d, row, devname, dev)?,
                }
            }
            (None, Some("bridged"), Some(parent)) => NicKind::Bridged {
                bridge: parent.to_string(),
                host_name: host_name(d, row, devname, dev)?,
            },
            (None, Some("macvlan"), Some(parent)) => NicKind::Macvlan {
                parent: parent.to_string(),
            },
            _ => {
                return Err(DaemonError::BadRequest(format!(
                    "Device {devname:?} needs network, or nictype and parent"
                )))
            }
        };
        out.push(NicSpec {
            device: devname.clone(),
            kind,
            name: interface_name(devname, dev),
            hwaddr,
            mtu,
        });
    }
    Ok(out)
}

fn host_name(
    d: &Daemon,
    row: &InstanceRow,
    devname: &str,
    dev: &BTreeMap<String, String>,
) -> Result<String> {
    let name = opt(dev, "host_name")
        .map(str::to_string)
        .unwrap_or_else(random_veth_name);
    d.db.set_instance_config_key(
        &row.name,
        &format!("volatile.{devname}.host_name"),
        Some(&name),
    )?;
    Ok(name)
}

/// The NICs to plug at start, written as a plan for the runtime's start hook; the hook
/// command, or `None` when the instance has no NIC.
pub fn start_hook(
    d: &Daemon,
    row: &InstanceRow,
    expanded: &Expanded,
) -> Result<Option<Vec<String>>> {
    let nics = prepare_nics(d, row, nic_devices(&expanded.devices))?;
    if nics.is_empty() {
        return Ok(None);
    }
    let rd = d.runtime_dir(&row.name);
    std::fs::create_dir_all(&rd).map_err(|e| DaemonError::io("create", &rd, e))?;
    let plan = rd.join("nics.json");
    nic::write_plan(&plan, &nics)?;
    Ok(Some(vec![
        d.hutchd.display().to_string(),
        "__nic-plug".into(),
        plan.display().to_string(),
    ]))
}

/// `hutchd __nic-plug <plan>`, run by the runtime between namespace setup and init's exec.
pub fn nic_plug_main(plan: &std::path::Path) -> ! {
    let result = (|| -> anyhow::Result<()> {
        let pid: i32 = std::env::var("HUTCH_PID")?.parse()?;
        let nics = nic::read_plan(plan)?;
        nic::plug(pid, &nics)?;
        Ok(())
    })();
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1)
        }
    }
}

/// After a stop: the host-side names are gone with the namespace.
pub fn forget_host_names(d: &Daemon, row: &InstanceRow) -> Result<()> {
    for key in row
        .config
        .keys()
        .filter(|k| k.starts_with("volatile.") && k.ends_with(".host_name"))
    {
        d.db.set_instance_config_key(&row.name, key, None)?;
    }
    Ok(())
}

/// Removes the dnsmasq host entries of a deleted or renamed instance.
pub fn forget_instance(d: &Daemon, name: &str) -> Result<()> {
    for net in d.db.networks()? {
        dnsmasq::remove_host_entries(&network_files(d, &net.name), name);
    }
    Ok(())
}

/// The static address of the instance on a managed network, the target of NAT proxies.
fn static_ipv4(expanded: &Expanded) -> Option<IpAddr> {
    nic_devices(&expanded.devices).find_map(|(_, dev)| {
        opt(dev, "network")?;
        opt(dev, "ipv4.address")?.parse().ok()
    })
}

/// The running proxies of one instance: userspace forwarders by device, and whether its
/// DNAT table exists.
#[derive(Default)]
pub struct InstanceProxies {
    forwarders: BTreeMap<String, Forwarder>,
    table: bool,
}

/// Starts the proxy devices of a running instance whose init is `pid`.
pub async fn start_proxies(d: &AppState, name: &str, pid: i32, expanded: &Expanded) -> Result<()> {
    sync_proxies(d, name, pid, &Expanded::default(), expanded).await
}

/// Brings the proxies of instance `name` from the `old` devices to the `new` ones: changed
/// and removed forwarders are shut down, new ones started, the DNAT table rewritten.
async fn sync_proxies(
    d: &AppState,
    name: &str,
    pid: i32,
    old: &Expanded,
    new: &Expanded,
) -> Result<()> {
    let old_p: BTreeMap<_, _> = proxy_devices(&old.devices).collect();
    let new_p: BTreeMap<_, _> = proxy_devices(&new.devices).collect();
    let mut running = lock(&d.net.proxies).remove(name).unwrap_or_default();
    let stale: Vec<String> = running
        .forwarders
        .keys()
        .filter(|k| old_p.get(*k) != new_p.get(*k) || !new_p.contains_key(*k))
        .cloned()
        .collect();
    for k in stale {
        if let Some(f) = running.forwarders.remove(&k) {
            f.shutdown().await;
        }
    }
    let mut dnat = Vec::new();
    let mut failed = None;
    for (devname, dev) in &new_p {
        let listen: ProxyAddr = opt(dev, "listen").unwrap_or_default().parse()?;
        let connect: ProxyAddr = opt(dev, "connect").unwrap_or_default().parse()?;
        if flag(dev, "nat") {
            let target = if connect.addr.is_unspecified() || connect.addr.is_loopback() {
                match static_ipv4(new) {
                    Some(ip) => ip,
                    None => {
                        failed = Some(DaemonError::BadRequest(format!(
                            "Proxy {devname:?}: nat needs a NIC with a static ipv4.address on a managed network"
                        )));
                        break;
                    }
                }
            } else {
                connect.addr
            };
            dnat.push(DnatRule {
                protocol: listen.protocol,
                listen_addr: (!listen.addr.is_unspecified()).then_some(listen.addr),
                listen_ports: listen.ports,
                connect_addr: target,
                connect_port: connect.ports.0,
                single_target: connect.port_count() == 1,
            });
            continue;
        }
        if running.forwarders.contains_key(*devname) {
            continue;
        }
        let (lns, cns) = if opt(dev, "bind") == Some("instance") {
            (Netns::Pid(pid), Netns::Host)
        } else {
            (Netns::Host, Netns::Pid(pid))
        };
        match Forwarder::start(lns, listen, cns, connect).await {
            Ok(f) => {
                running.forwarders.insert(devname.to_string(), f);
            }
            Err(e) => {
                failed = Some(DaemonError::BadRequest(format!("Proxy {devname:?}: {e}")));
                break;
            }
        }
    }
    if failed.is_none() && (running.table || !dnat.is_empty()) {
        let script = nft::proxy_ruleset(&nft::proxy_table(&d.net.scope, name), &dnat);
        let d2 = d.clone();
        let applied = tokio::task::spawn_blocking(move || d2.net.nft.apply(&script))
            .await
            .map_err(|e| DaemonError::Internal(e.to_string()))?;
        match applied {
            Ok(()) => running.table = !dnat.is_empty(),
            Err(e) => failed = Some(e.into()),
        }
    }
    if !running.forwarders.is_empty() || running.table {
        lock(&d.net.proxies).insert(name.to_string(), running);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Stops the proxies of an instance (before a stop, or when it died on its own).
pub fn stop_proxies(d: &Daemon, name: &str) {
    let Some(running) = lock(&d.net.proxies).remove(name) else {
        return;
    };
    for f in running.forwarders.into_values() {
        f.stop();
    }
    if running.table {
        let script = nft::delete_table_script(&nft::proxy_table(&d.net.scope, name));
        if let Err(e) = d.net.nft.apply(&script) {
            tracing::warn!(instance = name, error = %crate::chain(&e), "remove proxy rules");
        }
    }
}

/// Hot-plug: applies changed `nic` and `proxy` devices to a running instance.
pub async fn apply_device_changes(
    d: &AppState,
    row: &InstanceRow,
    pid: i32,
    old: &Expanded,
    new: &Expanded,
) -> Result<()> {
    let old_nics: BTreeMap<_, _> = nic_devices(&old.devices).collect();
    let new_nics: BTreeMap<_, _> = nic_devices(&new.devices).collect();
    let gone: Vec<String> = old_nics
        .iter()
        .filter(|(k, v)| new_nics.get(*k) != Some(*v))
        .map(|(k, v)| {
            if let Some(net) = opt(v, "network") {
                dnsmasq::remove_host_entry(&network_files(d, net), &row.name, k);
            }
            interface_name(k, v)
        })
        .collect();
    let added: Vec<(&String, &BTreeMap<String, String>)> = new_nics
        .iter()
        .filter(|(k, v)| old_nics.get(*k) != Some(*v))
        .map(|(k, v)| (*k, *v))
        .collect();
    if !gone.is_empty() || !added.is_empty() {
        let specs = prepare_nics(d, row, added.into_iter())?;
        tokio::task::spawn_blocking(move || -> Result<()> {
            for name in gone {
                nic::unplug(pid, &name)?;
            }
            nic::plug(pid, &specs)?;
            Ok(())
        })
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
    }
    sync_proxies(d, &row.name, pid, old, new).await
}

/// The `network` of an instance's state: its interfaces, read inside its namespace.
/// `ifaces` are the instance's interfaces when already read (listings read them all at
/// once), else they are read now.
pub fn instance_network(
    pid: i32,
    ifaces: Option<nic::Interfaces>,
    config: &BTreeMap<String, String>,
    devices: &Devices,
) -> BTreeMap<String, Value> {
    let ifaces = match ifaces {
        Some(i) => i,
        None => match nic::interfaces(pid) {
            Ok(i) => i,
            Err(_) => return BTreeMap::new(),
        },
    };
    ifaces
        .into_iter()
        .map(|(link, addrs)| {
            let mut st = interface_state(&link, &addrs);
            if let Some((devname, _)) =
                nic_devices(devices).find(|(k, v)| interface_name(k, v) == link.name)
            {
                st.host_name = config
                    .get(&format!("volatile.{devname}.host_name"))
                    .cloned()
                    .unwrap_or_default();
            }
            (
                link.name.clone(),
                serde_json::to_value(st).unwrap_or_default(),
            )
        })
        .collect()
}

/// At startup: every network brought back (bridge, addresses, rules, a dnsmasq adopted or
/// restarted), and tables of this daemon that no network or instance owns removed.
pub fn start_networks(d: &Daemon) {
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
            if needs && dnsmasq::running_pid(&network_files(d, &row.name), &row.name).is_none() {
                restart_dnsmasq(d, &row.name, &cfg)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!(network = row.name, error = %e.chain(), "bring up network");
        }
    }
}

/// Brings back the proxies of running instances (after a daemon restart).
pub async fn restore_proxies(d: &AppState) {
    for row in d.db.instances().unwrap_or_default() {
        let info = super::runtime_info(d, &row.name);
        if info.pid <= 0 {
            continue;
        }
        let Ok(expanded) = expand(d, &row) else {
            continue;
        };
        if let Err(e) = start_proxies(d, &row.name, info.pid as i32, &expanded).await {
            tracing::error!(instance = row.name, error = %e.chain(), "restore proxies");
        }
    }
}

/// Every two seconds: a dead dnsmasq is reaped and restarted, and proxies of instances
/// that stopped on their own are removed.
pub fn start_supervisor(d: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let d2 = d.clone();
            let _ = tokio::task::spawn_blocking(move || supervise_once(&d2)).await;
        }
    });
}

fn supervise_once(d: &Daemon) {
    lock(&d.net.dnsmasq).retain(|_, child| !matches!(child.try_wait(), Ok(Some(_))));
    for row in d.db.networks().unwrap_or_default() {
        let Ok(cfg) = parse_row(&row) else { continue };
        if cfg.ipv4.is_none() && cfg.ipv6.is_none() {
            continue;
        }
        if dnsmasq::running_pid(&network_files(d, &row.name), &row.name).is_none() {
            tracing::warn!(network = row.name, "dnsmasq is not running; restarting it");
            if let Err(e) = restart_dnsmasq(d, &row.name, &cfg) {
                tracing::error!(network = row.name, error = %e.chain(), "restart dnsmasq");
            }
        }
    }
    let with_proxies: Vec<String> = lock(&d.net.proxies).keys().cloned().collect();
    for name in with_proxies {
        if super::runtime_info(d, &name).pid <= 0 {
            stop_proxies(d, &name);
        }
    }
}

/// `hutchd init --auto`: network `name` with automatic addresses, unless it exists.
pub fn init_network(d: &Daemon, name: &str) -> Result<bool> {
    if d.db.network(name)?.is_some() {
        return Ok(false);
    }
    create_network(
        d,
        NetworksPost {
            name: name.to_string(),
            kind: "bridge".into(),
            put: NetworkPut {
                config: [("ipv4.address", "auto"), ("ipv6.address", "none")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                description: String::new(),
            },
        },
    )?;
    Ok(true)
}
