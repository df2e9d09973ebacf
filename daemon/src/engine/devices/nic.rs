//! NIC devices: their rules, the plan the runtime's start hook plugs (`hutchd-helper __nic-plug`),
//! hot-plug and unplug while running, and the interfaces an instance's state reports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hutch_api::profile::Devices;
use hutch_network::addr::{parse_hwaddr, random_hwaddr, random_veth_name, valid_interface_name};
use hutch_network::nic::{self, Interfaces, NicKind, NicSpec};
use hutch_network::Netlink;
use serde_json::Value;

use super::validate::{invalid, opt as o, Kind, Opt};
use super::{of_type, opt, Options};
use crate::db::instances::InstanceRow;
use crate::engine::net_state::interface_state;
use crate::engine::spec::{expand, Expanded};
use crate::engine::{blocking, Engine};
use crate::error::{DaemonError, Result};

/// The options of `nic` devices that hutch implements (`boot.priority` only orders VM
/// boots in LXD, and is accepted as it is there).
pub(super) const OPTIONS: &[Opt] = &[
    o("type", Kind::Any),
    o("network", Kind::Any),
    o("nictype", Kind::Any),
    o("parent", Kind::Any),
    o("name", Kind::Any),
    o("hwaddr", Kind::Any),
    o("host_name", Kind::Any),
    o("mtu", Kind::Any),
    o("ipv4.address", Kind::Any),
    o("boot.priority", Kind::Any),
];

/// The rules of NIC `devname`: on a managed network (with an optional static address in
/// its subnet), or bridged or macvlan on a parent device; names, MAC and MTU well-formed.
pub(super) fn validate(e: &Engine, devname: &str, dev: &Options) -> Result<()> {
    let bad = |why: String| invalid(devname, why);
    match (opt(dev, "network"), opt(dev, "nictype")) {
        (Some(net), None) => {
            let cfg = e
                .network_config(net)?
                .ok_or_else(|| bad(format!("network {net:?} not found")))?;
            if let Some(ip) = opt(dev, "ipv4.address") {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| bad(format!("{ip:?} is not an IPv4 address")))?;
                let ok = cfg.ipv4.is_some_and(|n| {
                    n.contains(ip) && n.addr != ip && ip != n.network() && ip != n.broadcast()
                });
                if !ok {
                    return Err(bad(format!(
                        "ipv4.address {ip} is not a free host address of network {net:?}"
                    )));
                }
            }
        }
        (Some(_), Some(_)) => return Err(bad("network and nictype cannot both be set".into())),
        (None, Some("bridged" | "macvlan")) => {
            let parent = opt(dev, "parent").ok_or_else(|| bad("nictype needs a parent".into()))?;
            if !valid_interface_name(parent) {
                return Err(bad(format!("invalid parent {parent:?}")));
            }
            if opt(dev, "ipv4.address").is_some() {
                return Err(bad("ipv4.address needs a managed network".into()));
            }
        }
        (None, Some(t)) => return Err(bad(format!("unsupported nictype {t:?}"))),
        (None, None) => return Err(bad("a nic needs network or nictype".into())),
    }
    if let Some(n) = opt(dev, "name") {
        if !valid_interface_name(n) {
            return Err(bad(format!("invalid interface name {n:?}")));
        }
    }
    if let Some(n) = opt(dev, "host_name") {
        if !valid_interface_name(n) {
            return Err(bad(format!("invalid host_name {n:?}")));
        }
    }
    if let Some(mac) = opt(dev, "hwaddr") {
        parse_hwaddr(mac)?;
    }
    if let Some(mtu) = opt(dev, "mtu") {
        if !mtu.parse::<u32>().is_ok_and(|m| (68..=65535).contains(&m)) {
            return Err(bad(format!("invalid mtu {mtu:?}")));
        }
    }
    Ok(())
}

/// The NICs of `devices`.
fn nics(devices: &Devices) -> impl Iterator<Item = (&String, &Options)> {
    of_type(devices, "nic")
}

/// The interface name inside the instance: `name`, else the device's own name.
fn interface_name(devname: &str, dev: &Options) -> String {
    match opt(dev, "name") {
        Some(n) => n.to_string(),
        None if valid_interface_name(devname) => devname.to_string(),
        None => "eth0".into(),
    }
}

/// Whether NIC `dev` plugs into `network`: it is its managed network, or its bridge.
fn uses(dev: &Options, network: &str) -> bool {
    opt(dev, "network") == Some(network)
        || (opt(dev, "nictype") == Some("bridged") && opt(dev, "parent") == Some(network))
}

impl Engine {
    /// The profiles and instances with a NIC on network `name`, as API paths.
    pub(crate) fn network_users(&self, name: &str) -> Result<Vec<String>> {
        let d = &self.d;
        let mut out = Vec::new();
        for p in d.db.profile_names()? {
            if let Some(put) = d.db.profile(&p)? {
                if nics(&put.devices).any(|(_, dev)| uses(dev, name)) {
                    out.push(format!("/1.0/profiles/{p}"));
                }
            }
        }
        for row in d.db.instances()? {
            let expanded = expand(d, &row)?;
            if nics(&expanded.devices).any(|(_, dev)| uses(dev, name)) {
                out.push(format!("/1.0/instances/{}", row.name));
            }
        }
        Ok(out)
    }
}

/// The NICs of `devices` ready to plug: stable MACs (kept in `volatile.<dev>.hwaddr`),
/// host-side names (in `volatile.<dev>.host_name`) and DHCP entries made.
fn prepare<'a>(
    e: &Engine,
    row: &InstanceRow,
    devices: impl Iterator<Item = (&'a String, &'a Options)>,
) -> Result<Vec<NicSpec>> {
    let d = &e.d;
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
                let cfg = e.network_config(net)?.ok_or_else(|| {
                    DaemonError::BadRequest(format!(
                        "Network {net:?} of device {devname:?} not found"
                    ))
                })?;
                mtu = mtu.or(cfg.mtu);
                let static_ip = opt(dev, "ipv4.address").and_then(|ip| ip.parse().ok());
                e.reserve_nic(net, &row.name, devname, &hwaddr, static_ip)?;
                NicKind::Bridged {
                    bridge: net.to_string(),
                    host_name: host_name(e, row, devname, dev)?,
                }
            }
            (None, Some("bridged"), Some(parent)) => NicKind::Bridged {
                bridge: parent.to_string(),
                host_name: host_name(e, row, devname, dev)?,
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

fn host_name(e: &Engine, row: &InstanceRow, devname: &str, dev: &Options) -> Result<String> {
    let name = opt(dev, "host_name")
        .map(str::to_string)
        .unwrap_or_else(random_veth_name);
    e.d.db.set_instance_config_key(
        &row.name,
        &format!("volatile.{devname}.host_name"),
        Some(&name),
    )?;
    Ok(name)
}

/// The NICs to plug at start, written as a plan for the runtime's start hook; the hook
/// command, or `None` when the instance has no NIC.
pub fn start_hook(
    e: &Engine,
    row: &InstanceRow,
    expanded: &Expanded,
) -> Result<Option<Vec<String>>> {
    let nics = prepare(e, row, nics(&expanded.devices))?;
    if nics.is_empty() {
        return Ok(None);
    }
    let rd = e.d.runtime_dir(&row.name);
    std::fs::create_dir_all(&rd).map_err(|err| DaemonError::io("create", &rd, err))?;
    let plan = rd.join("nics.json");
    nic::write_plan(&plan, &nics)?;
    Ok(Some(vec![
        e.d.helper.display().to_string(),
        "__nic-plug".into(),
        plan.display().to_string(),
    ]))
}

/// A running instance's veth NICs as (name inside, host end), from the host ends its
/// start recorded in `volatile.<dev>.host_name` (metrics read the host end's counters).
pub fn host_ends(config: &BTreeMap<String, String>, devices: &Devices) -> Vec<(String, String)> {
    nics(devices)
        .filter_map(|(devname, dev)| {
            let host = config.get(&format!("volatile.{devname}.host_name"))?;
            Some((interface_name(devname, dev), host.clone()))
        })
        .collect()
}

/// After a stop: the host-side names are gone with the namespace.
pub fn forget_host_names(e: &Engine, row: &InstanceRow) -> Result<()> {
    for key in row
        .config
        .keys()
        .filter(|k| k.starts_with("volatile.") && k.ends_with(".host_name"))
    {
        e.d.db.set_instance_config_key(&row.name, key, None)?;
    }
    Ok(())
}

/// Removes the DHCP entries of a deleted or renamed instance.
pub fn forget_instance(e: &Engine, name: &str) -> Result<()> {
    e.release_instance(name)
}

/// Hot-plug: NICs that changed or went are unplugged, new or changed ones plugged.
pub(super) async fn apply_changes(
    e: &Engine,
    row: &InstanceRow,
    pid: i32,
    old: &Expanded,
    new: &Expanded,
) -> Result<()> {
    let old_nics: BTreeMap<_, _> = nics(&old.devices).collect();
    let new_nics: BTreeMap<_, _> = nics(&new.devices).collect();
    let gone: Vec<String> = old_nics
        .iter()
        .filter(|(k, v)| new_nics.get(*k) != Some(*v))
        .map(|(k, v)| {
            if let Some(net) = opt(v, "network") {
                e.release_nic(net, &row.name, k);
            }
            interface_name(k, v)
        })
        .collect();
    let added: Vec<(&String, &Options)> = new_nics
        .iter()
        .filter(|(k, v)| old_nics.get(*k) != Some(*v))
        .map(|(k, v)| (*k, *v))
        .collect();
    if gone.is_empty() && added.is_empty() {
        return Ok(());
    }
    let specs = prepare(e, row, added.into_iter())?;
    let e2 = e.clone();
    blocking(move || {
        let nl = &*e2.d.net.netlink;
        for name in gone {
            nic::unplug(nl, pid, &name)?;
        }
        Ok(nic::plug(nl, pid, &specs)?)
    })
    .await
}

/// The interfaces of many running instances (for listings), read in one pass.
pub fn interfaces_of_many(e: &Engine, pids: &[i32]) -> Vec<hutch_network::Result<Interfaces>> {
    nic::interfaces_of_many(&*e.d.net.netlink, pids)
}

/// The `network` of an instance's state: its interfaces, read inside its namespace (unless
/// `ifaces` has them already: listings read them all at once).
pub fn instance_network(
    nl: &dyn Netlink,
    pid: i32,
    ifaces: Option<Interfaces>,
    config: &BTreeMap<String, String>,
    devices: &Devices,
) -> BTreeMap<String, Value> {
    let ifaces = match ifaces {
        Some(i) => i,
        None => match nic::interfaces(nl, pid) {
            Ok(i) => i,
            Err(_) => return BTreeMap::new(),
        },
    };
    ifaces
        .into_iter()
        .map(|(link, addrs)| {
            let mut st = interface_state(&link, &addrs);
            if let Some((devname, _)) =
                nics(devices).find(|(k, v)| interface_name(k, v) == link.name)
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
