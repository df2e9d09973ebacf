//! The network devices of instances: NICs (plugged at start by the runtime's hook, hot-
//! plugged and unplugged while running) and proxies (kernel DNAT, or forwarder processes
//! that outlive daemon restarts),
//! and the interfaces an instance's state reports.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use hutch_api::profile::Devices;
use hutch_network::addr::{random_hwaddr, random_veth_name, valid_interface_name};
use hutch_network::dnsmasq;
use hutch_network::nft::{self, DnatRule};
use hutch_network::nic::{self, NicKind, NicSpec};
use hutch_network::proxy::{check_pair, ProxyAddr};
use serde_json::Value;

use super::network::{
    interface_state, lock, network_files, nic_devices, opt, parse_row, proxy_devices,
};
use super::spec::{expand, flag, Expanded};
use crate::daemon::{AppState, Daemon};
use crate::db::instances::InstanceRow;
use crate::error::{DaemonError, Result};

/// Options of `nic` devices that hutch implements (`boot.priority` only orders VM boots in
/// LXD, and is accepted as it is there).
const NIC_OPTIONS: &[&str] = &[
    "type",
    "network",
    "nictype",
    "parent",
    "name",
    "hwaddr",
    "host_name",
    "mtu",
    "ipv4.address",
    "boot.priority",
];

/// Options of `proxy` devices that hutch implements.
const PROXY_OPTIONS: &[&str] = &["type", "listen", "connect", "bind", "nat"];

/// Options LXD knows for these devices that hutch does not implement: refused by name, so
/// that a limit or a filter is never silently not applied.
const UNSUPPORTED_PREFIXES: &[&str] = &[
    "limits.",
    "security.",
    "vlan",
    "ipv6.",
    "ipv4.routes",
    "queue.",
    "maas.",
    "gvrp",
    "acceleration",
    "proxy_protocol",
    "uid",
    "gid",
    "mode",
];

/// Every option of `dev` must be one of `known`.
fn check_options(devname: &str, dev: &BTreeMap<String, String>, known: &[&str]) -> Result<()> {
    for key in dev.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let why = if UNSUPPORTED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            format!("Device option {key:?} is not supported by hutch")
        } else {
            format!("Invalid device option {key:?}")
        };
        return Err(DaemonError::BadRequest(format!(
            "Invalid device {devname:?}: {why}"
        )));
    }
    Ok(())
}

/// Checks the `nic` and `proxy` devices of an instance or profile.
pub fn validate_devices(d: &Daemon, devices: &Devices) -> Result<()> {
    let bad =
        |dev: &str, why: String| DaemonError::BadRequest(format!("Invalid device {dev:?}: {why}"));
    for (devname, dev) in devices {
        super::device_options::check_device(devname, dev)?;
    }
    for (devname, dev) in nic_devices(devices) {
        check_options(devname, dev, NIC_OPTIONS)?;
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
        check_options(devname, dev, PROXY_OPTIONS)?;
        let listen: ProxyAddr = opt(dev, "listen")
            .ok_or_else(|| bad(devname, "a proxy needs listen".into()))?
            .parse()?;
        let connect: ProxyAddr = opt(dev, "connect")
            .ok_or_else(|| bad(devname, "a proxy needs connect".into()))?
            .parse()?;
        check_pair(&listen, &connect)?;
        if let Some(v) = opt(dev, "nat") {
            hutch_api::config::parse_bool(v).map_err(|e| bad(devname, format!("nat: {e}")))?;
        }
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
                let static_ip: Option<Ipv4Addr> =
                    opt(dev, "ipv4.address").and_then(|ip| ip.parse().ok());
                // A static address is reserved for its instance, running or not.
                if let Some(ip) = static_ip {
                    let taken = dnsmasq::static_entries(&network_files(d, net))
                        .into_iter()
                        .find(|(_, addr, host)| *addr == ip && *host != row.name);
                    if let Some((_, _, host)) = taken {
                        return Err(DaemonError::BadRequest(format!(
                            "IP address {ip} is already in use on network {net:?} (by {host})"
                        )));
                    }
                }
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

/// A proxy device's process (`hutchd __proxy`, see `hutch_network::proxy::proxy_main`),
/// with the device config it serves. Recorded in the instance's runtime directory, so that
/// a restarted daemon adopts it: forwarding goes on while hutchd is down.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ProxyProcess {
    pid: i32,
    start_time: u64,
    device: BTreeMap<String, String>,
}

impl ProxyProcess {
    /// Still the process that was started (not a recycled pid), and not a zombie.
    fn alive(&self) -> bool {
        hutch_network::process::alive(self.pid)
            && hutch_runtime::process_start_time(self.pid) == Some(self.start_time)
    }

    /// SIGTERM, then SIGKILL after two seconds; returns once it is gone, so that its ports
    /// are free again.
    fn stop(&self) {
        if self.alive() {
            hutch_network::process::terminate(
                &[self.pid],
                std::time::Duration::from_secs(2),
                || !self.alive(),
            );
        }
    }
}

/// The running proxies of one instance: forwarder processes by device, and whether its
/// DNAT table exists.
#[derive(Default)]
pub struct InstanceProxies {
    processes: BTreeMap<String, ProxyProcess>,
    table: bool,
}

fn proxies_file(d: &Daemon, name: &str) -> std::path::PathBuf {
    d.runtime_dir(name).join("proxies.json")
}

fn save_proxies(d: &Daemon, name: &str, running: &InstanceProxies) {
    let file = proxies_file(d, name);
    if running.processes.is_empty() {
        let _ = std::fs::remove_file(&file);
        return;
    }
    let tmp = file.with_extension("json.tmp");
    let written = serde_json::to_vec(&running.processes)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        tracing::warn!(instance = name, error = %e, "record proxy processes");
    }
}

/// Starts the forwarder process of proxy `devname` of instance `name` (init `pid`), and
/// waits for it to have bound its ports or to say why it could not.
fn spawn_proxy(
    d: &Daemon,
    name: &str,
    devname: &str,
    dev: &BTreeMap<String, String>,
    pid: i32,
) -> Result<ProxyProcess> {
    let spec = hutch_network::proxy::ProxySpec {
        listen: opt(dev, "listen").unwrap_or_default().to_string(),
        connect: opt(dev, "connect").unwrap_or_default().to_string(),
        bind_instance: opt(dev, "bind") == Some("instance"),
        instance_pid: pid,
    };
    let file = d.runtime_dir(name).join(format!("proxy.{devname}.json"));
    let body =
        serde_json::to_vec(&spec).map_err(|e| DaemonError::failed("encode", "proxy spec", e))?;
    std::fs::write(&file, body).map_err(|e| DaemonError::io("write", &file, e))?;
    let mut child = std::process::Command::new(&d.hutchd)
        .arg("__proxy")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| DaemonError::io("run", &d.hutchd, e))?;
    let mut out = child.stdout.take().expect("piped stdout");
    // The first process leaves at once; the forwarder it forked closes stdout once ready.
    let _ = child.wait();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
        let _ = tx.send(text);
    });
    let said = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_default();
    let line = said.lines().next().unwrap_or_default();
    if let Some(msg) = line.strip_prefix("error ") {
        return Err(DaemonError::BadRequest(format!("Proxy {devname:?}: {msg}")));
    }
    let started = line
        .strip_prefix(hutch_network::proxy::PROXY_READY)
        .and_then(|p| p.trim().parse::<i32>().ok())
        .and_then(|p| Some((p, hutch_runtime::process_start_time(p)?)));
    match started {
        Some((pid, start_time)) => Ok(ProxyProcess {
            pid,
            start_time,
            device: dev.clone(),
        }),
        None => Err(DaemonError::failed(
            "start",
            format!("proxy {devname:?}"),
            format!("the forwarder said {line:?}"),
        )),
    }
}

/// Starts the proxy devices of a running instance whose init is `pid`.
pub async fn start_proxies(d: &AppState, name: &str, pid: i32, expanded: &Expanded) -> Result<()> {
    sync_proxies(d, name, pid, expanded).await
}

/// Brings the proxies of instance `name` to its devices `new`: forwarders whose device
/// changed or went are stopped, new ones started, the DNAT table rewritten.
async fn sync_proxies(d: &AppState, name: &str, pid: i32, new: &Expanded) -> Result<()> {
    let new_p: BTreeMap<_, _> = proxy_devices(&new.devices).collect();
    let mut running = lock(&d.net.proxies).remove(name).unwrap_or_default();
    let stale: Vec<String> = running
        .processes
        .iter()
        .filter(|(k, p)| new_p.get(k) != Some(&&p.device))
        .map(|(k, _)| k.clone())
        .collect();
    let stale: Vec<ProxyProcess> = stale
        .iter()
        .filter_map(|k| running.processes.remove(k))
        .collect();
    if !stale.is_empty() {
        tokio::task::spawn_blocking(move || stale.iter().for_each(ProxyProcess::stop)).await?;
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
        if running.processes.contains_key(*devname) {
            continue;
        }
        let (d2, n2, dn2, dev2) = (
            d.clone(),
            name.to_string(),
            devname.to_string(),
            (*dev).clone(),
        );
        let spawned =
            tokio::task::spawn_blocking(move || spawn_proxy(&d2, &n2, &dn2, &dev2, pid)).await?;
        match spawned {
            Ok(p) => {
                running.processes.insert(devname.to_string(), p);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if failed.is_none() && (running.table || !dnat.is_empty()) {
        let script = nft::proxy_ruleset(&nft::proxy_table(&d.net.scope, name), &dnat);
        let d2 = d.clone();
        let applied = tokio::task::spawn_blocking(move || d2.net.nft.apply(&script)).await?;
        match applied {
            Ok(()) => running.table = !dnat.is_empty(),
            Err(e) => failed = Some(e.into()),
        }
    }
    save_proxies(d, name, &running);
    if !running.processes.is_empty() || running.table {
        lock(&d.net.proxies).insert(name.to_string(), running);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Stops the proxies of an instance (before a stop, or when it died on its own).
pub fn stop_proxies(d: &Daemon, name: &str) {
    let running = lock(&d.net.proxies).remove(name);
    // Processes a crashed daemon left behind are in the record only.
    for p in read_proxies(d, name).values() {
        p.stop();
    }
    let _ = std::fs::remove_file(proxies_file(d, name));
    let Some(running) = running else {
        return;
    };
    for p in running.processes.values() {
        p.stop();
    }
    if running.table {
        let script = nft::delete_table_script(&nft::proxy_table(&d.net.scope, name));
        if let Err(e) = d.net.nft.apply(&script) {
            tracing::warn!(instance = name, error = %crate::chain(&e), "remove proxy rules");
        }
    }
}

fn read_proxies(d: &Daemon, name: &str) -> BTreeMap<String, ProxyProcess> {
    std::fs::read(proxies_file(d, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
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
        .await??;
    }
    sync_proxies(d, &row.name, pid, new).await
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
        // Forwarders that outlived the daemon are adopted (sync stops those whose device
        // changed); the dead are forgotten.
        let adopted = InstanceProxies {
            processes: read_proxies(d, &row.name)
                .into_iter()
                .filter(|(_, p)| p.alive())
                .collect(),
            table: false,
        };
        lock(&d.net.proxies).insert(row.name.clone(), adopted);
        if let Err(e) = start_proxies(d, &row.name, info.pid as i32, &expanded).await {
            tracing::error!(instance = row.name, error = %e.chain(), "restore proxies");
        }
    }
}
