//! Proxy devices: kernel DNAT (`nat=true`, one nftables table per instance) or forwarder
//! processes (`hutchd-helper __proxy`) that outlive daemon restarts, recorded in the instance's
//! runtime directory so that a restarted daemon adopts them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use hutch_api::profile::Devices;
use hutch_network::nft::{self, DnatRule};
use hutch_network::proxy::{check_pair, ProxyAddr, ProxySpec};
use hutch_network::ProcessId;

use super::validate::{invalid, opt as o, Kind, Opt};
use super::{of_type, opt, Options};
use crate::daemon::Daemon;
use crate::engine::net_state::lock;
use crate::engine::spec::{expand, flag, Expanded};
use crate::engine::{blocking, runtime_info, Engine};
use crate::error::{DaemonError, Result};

/// The options of `proxy` devices that hutch implements.
pub(super) const OPTIONS: &[Opt] = &[
    o("type", Kind::Any),
    o("listen", Kind::Any),
    o("connect", Kind::Any),
    o("bind", Kind::Any),
    o("nat", Kind::Bool),
];

/// How long a forwarder has to leave after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(2);

/// The rules of proxy `devname`: addresses that pair up, a known `bind`, and what NAT needs.
pub(super) fn validate(devname: &str, dev: &Options) -> Result<()> {
    let bad = |why: &str| invalid(devname, why.into());
    let listen: ProxyAddr = opt(dev, "listen")
        .ok_or_else(|| bad("a proxy needs listen"))?
        .parse()?;
    let connect: ProxyAddr = opt(dev, "connect")
        .ok_or_else(|| bad("a proxy needs connect"))?
        .parse()?;
    check_pair(&listen, &connect)?;
    match opt(dev, "bind") {
        None | Some("host") | Some("instance") => {}
        Some(b) => {
            return Err(invalid(
                devname,
                format!("bind must be host or instance, not {b:?}"),
            ))
        }
    }
    if flag(dev, "nat") {
        if opt(dev, "bind") == Some("instance") {
            return Err(bad("nat needs bind=host"));
        }
        if listen.addr.is_loopback() {
            return Err(bad("nat cannot listen on a loopback address"));
        }
    }
    Ok(())
}

/// A proxy device's forwarder, with the device config it serves.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ProxyProcess {
    #[serde(flatten)]
    id: ProcessId,
    device: Options,
}

/// The running proxies of one instance: forwarders by device, and whether its DNAT table
/// exists.
#[derive(Debug, Default)]
struct InstanceProxies {
    processes: BTreeMap<String, ProxyProcess>,
    table: bool,
}

/// The running proxies of every instance.
#[derive(Debug, Default)]
pub struct Proxies(Mutex<HashMap<String, InstanceProxies>>);

fn proxies_file(d: &Daemon, name: &str) -> std::path::PathBuf {
    d.runtime_dir(name).join("proxies.json")
}

fn save(d: &Daemon, name: &str, running: &InstanceProxies) {
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

fn read(d: &Daemon, name: &str) -> BTreeMap<String, ProxyProcess> {
    std::fs::read(proxies_file(d, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Stops forwarders `ps`, and returns once they are gone (so their ports are free again).
fn stop_all(d: &Daemon, ps: &[ProxyProcess]) {
    let ids: Vec<ProcessId> = ps.iter().map(|p| p.id).collect();
    if !ids.is_empty() {
        d.net.processes.stop(&ids, GRACE);
    }
}

/// The static address of the instance on a managed network, the target of NAT proxies.
fn static_ipv4(devices: &Devices) -> Option<IpAddr> {
    of_type(devices, "nic").find_map(|(_, dev)| {
        opt(dev, "network")?;
        opt(dev, "ipv4.address")?.parse().ok()
    })
}

/// Starts the forwarder of proxy `devname` of instance `name` (init `pid`).
fn spawn(d: &Daemon, name: &str, devname: &str, dev: &Options, pid: i32) -> Result<ProxyProcess> {
    let spec = ProxySpec {
        listen: opt(dev, "listen").unwrap_or_default().to_string(),
        connect: opt(dev, "connect").unwrap_or_default().to_string(),
        bind_instance: opt(dev, "bind") == Some("instance"),
        instance_pid: pid,
    };
    let file = d.runtime_dir(name).join(format!("proxy.{devname}.json"));
    let id = d
        .net
        .processes
        .spawn_proxy(&d.helper, devname, &spec, &file)?;
    Ok(ProxyProcess {
        id,
        device: dev.clone(),
    })
}

/// Starts the proxy devices of a running instance whose init is `pid`.
pub async fn start_proxies(e: &Engine, name: &str, pid: i32, expanded: &Expanded) -> Result<()> {
    sync_proxies(e, name, pid, expanded).await
}

/// Brings the proxies of instance `name` to its devices `new`: forwarders whose device
/// changed or went are stopped, new ones started, the DNAT table rewritten. On failure the
/// forwarders this call started are stopped again.
pub(super) async fn sync_proxies(e: &Engine, name: &str, pid: i32, new: &Expanded) -> Result<()> {
    let d = &e.d;
    let new_p: BTreeMap<_, _> = of_type(&new.devices, "proxy").collect();
    let mut running = lock(&d.net.proxies.0).remove(name).unwrap_or_default();
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
        let e2 = e.clone();
        blocking(move || {
            stop_all(&e2.d, &stale);
            Ok(())
        })
        .await?;
    }
    let mut dnat = Vec::new();
    let mut failed = None;
    // Undone if a later device fails: a sync starts all its forwarders or none.
    let mut started: Vec<String> = Vec::new();
    for (devname, dev) in &new_p {
        let listen: ProxyAddr = opt(dev, "listen").unwrap_or_default().parse()?;
        let connect: ProxyAddr = opt(dev, "connect").unwrap_or_default().parse()?;
        if flag(dev, "nat") {
            let target = if connect.addr.is_unspecified() || connect.addr.is_loopback() {
                match static_ipv4(&new.devices) {
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
        let (e2, n2, dn2, dev2) = (
            e.clone(),
            name.to_string(),
            devname.to_string(),
            (*dev).clone(),
        );
        match blocking(move || spawn(&e2.d, &n2, &dn2, &dev2, pid)).await {
            Ok(p) => {
                running.processes.insert(devname.to_string(), p);
                started.push(devname.to_string());
            }
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    if failed.is_none() && (running.table || !dnat.is_empty()) {
        let script = nft::proxy_ruleset(&nft::proxy_table(&d.net.scope, name), &dnat);
        let e2 = e.clone();
        match blocking(move || Ok(e2.d.net.nft.apply(&script)?)).await {
            Ok(()) => running.table = !dnat.is_empty(),
            Err(err) => failed = Some(err),
        }
    }
    if failed.is_some() && !started.is_empty() {
        let undo: Vec<ProxyProcess> = started
            .iter()
            .filter_map(|k| running.processes.remove(k))
            .collect();
        let e2 = e.clone();
        blocking(move || {
            stop_all(&e2.d, &undo);
            Ok(())
        })
        .await?;
    }
    save(d, name, &running);
    if !running.processes.is_empty() || running.table {
        lock(&d.net.proxies.0).insert(name.to_string(), running);
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Stops the proxies of an instance (before a stop, or when it died on its own).
pub fn stop_proxies(e: &Engine, name: &str) {
    let d = &e.d;
    let running = lock(&d.net.proxies.0).remove(name);
    // Processes a crashed daemon left behind are in the record only.
    let recorded: Vec<ProxyProcess> = read(d, name).into_values().collect();
    stop_all(d, &recorded);
    let _ = std::fs::remove_file(proxies_file(d, name));
    let Some(running) = running else {
        return;
    };
    let processes: Vec<ProxyProcess> = running.processes.into_values().collect();
    stop_all(d, &processes);
    if running.table {
        let script = nft::delete_table_script(&nft::proxy_table(&d.net.scope, name));
        if let Err(err) = d.net.nft.apply(&script) {
            tracing::warn!(instance = name, error = %crate::chain(&err), "remove proxy rules");
        }
    }
}

impl Engine {
    /// Stops the proxies of instances that stopped on their own (the supervisor's round).
    pub(crate) fn stop_proxies_of_stopped(&self) {
        let with_proxies: Vec<String> = lock(&self.d.net.proxies.0).keys().cloned().collect();
        for name in with_proxies {
            if runtime_info(&self.d, &name).pid <= 0 {
                stop_proxies(self, &name);
            }
        }
    }
}

/// Brings back the proxies of running instances (after a daemon restart).
pub async fn restore_proxies(e: &Engine) {
    let d = &e.d;
    for row in d.db.instances().unwrap_or_default() {
        let info = runtime_info(d, &row.name);
        if info.pid <= 0 {
            continue;
        }
        let Ok(expanded) = expand(d, &row) else {
            continue;
        };
        // Forwarders that outlived the daemon are adopted (sync stops those whose device
        // changed); the dead are forgotten.
        let adopted = InstanceProxies {
            processes: read(d, &row.name)
                .into_iter()
                .filter(|(_, p)| d.net.processes.alive(p.id))
                .collect(),
            table: false,
        };
        lock(&d.net.proxies.0).insert(row.name.clone(), adopted);
        if let Err(err) = start_proxies(e, &row.name, info.pid as i32, &expanded).await {
            tracing::error!(instance = row.name, error = %err.chain(), "restore proxies");
        }
    }
}
