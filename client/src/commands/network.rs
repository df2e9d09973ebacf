//! `hutch network list|show|create|delete|set|unset|get|rename|edit|info|list-leases|attach|detach`.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::device::{self, get_config, Owner};
use super::{edit as editor, lxc_format, pairs};

use crate::http::{encode, Client};
use crate::output::{self, Format};

/// `hutch network ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// List networks, managed and not (the host's other interfaces).
    #[command(alias = "ls")]
    List {
        /// `[REMOTE:]`.
        remote: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show a network as YAML.
    Show { name: String },
    /// Create a bridge: NAME [KEY=VALUE...] (ipv4.address defaults to auto).
    Create { name: String, config: Vec<String> },
    #[command(alias = "rm")]
    Delete { name: String },
    /// Get a network config key: NETWORK KEY.
    Get { name: String, key: String },
    /// Set config keys: NAME KEY=VALUE...
    Set {
        name: String,
        #[arg(required = true)]
        config: Vec<String>,
    },
    /// Unset a network config key: NETWORK KEY.
    Unset { name: String, key: String },
    #[command(alias = "mv")]
    Rename { name: String, new: String },
    /// Edit a managed network as YAML ($VISUAL/$EDITOR on a terminal, else stdin).
    Edit { name: String },
    /// The interface's addresses and counters.
    Info { name: String },
    ListLeases {
        name: String,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Give INSTANCE a NIC on NETWORK: NETWORK INSTANCE [DEVICE [INTERFACE]].
    Attach {
        network: String,
        instance: String,
        device: Option<String>,
        interface: Option<String>,
    },
    /// Give PROFILE a NIC on NETWORK: NETWORK PROFILE [DEVICE [INTERFACE]].
    AttachProfile {
        network: String,
        profile: String,
        device: Option<String>,
        interface: Option<String>,
    },
    /// Remove INSTANCE's NIC on NETWORK: NETWORK INSTANCE [DEVICE].
    Detach {
        network: String,
        instance: String,
        device: Option<String>,
    },
    /// Remove PROFILE's NIC on NETWORK: NETWORK PROFILE [DEVICE].
    DetachProfile {
        network: String,
        profile: String,
        device: Option<String>,
    },
}

/// Runs one `hutch network` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List { remote, format } => {
            let (c, _) = super::remote::split(c, remote.as_deref().unwrap_or(""))?;
            list(&c, format)
        }
        Cmd::Show { name } => show(c, &name),
        Cmd::Create { name, config } => create(c, &name, &config),
        Cmd::Delete { name } => delete(c, &name),
        Cmd::Get { name, key } => get(c, &name, &key),
        Cmd::Set { name, config } => set(c, &name, &config),
        Cmd::Unset { name, key } => unset(c, &name, &key),
        Cmd::Rename { name, new } => rename(c, &name, &new),
        Cmd::Edit { name } => edit(c, &name),
        Cmd::Info { name } => info(c, &name),
        Cmd::ListLeases { name, format } => list_leases(c, &name, format),
        Cmd::Attach {
            network,
            instance,
            device,
            interface,
        } => attach(
            c,
            Owner::Instance,
            &network,
            &instance,
            device.as_deref(),
            interface.as_deref(),
        ),
        Cmd::AttachProfile {
            network,
            profile,
            device,
            interface,
        } => attach(
            c,
            Owner::Profile,
            &network,
            &profile,
            device.as_deref(),
            interface.as_deref(),
        ),
        Cmd::Detach {
            network,
            instance,
            device,
        } => detach(c, Owner::Instance, &network, &instance, device.as_deref()),
        Cmd::DetachProfile {
            network,
            profile,
            device,
        } => detach(c, Owner::Profile, &network, &profile, device.as_deref()),
    }
}

fn url(name: &str) -> String {
    format!("/1.0/networks/{}", encode(name))
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

pub fn list(client: &Client, format: Format) -> Result<()> {
    let all = client.get("/1.0/networks?recursion=1")?;
    let items = all.as_array().cloned().unwrap_or_default();
    let mut rows: Vec<Vec<String>> = items
        .iter()
        // lxc leaves loopback and unknown links out of the table (not out of json/yaml).
        .filter(|n| !["loopback", "unknown"].contains(&n["type"].as_str().unwrap_or("")))
        .map(|n| {
            vec![
                s(&n["name"]),
                s(&n["type"]),
                if n["managed"].as_bool().unwrap_or(false) {
                    "YES"
                } else {
                    "NO"
                }
                .into(),
                s(&n["config"]["ipv4.address"]),
                s(&n["config"]["ipv6.address"]),
                s(&n["description"]),
                n["used_by"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
                s(&n["status"]).to_uppercase(),
            ]
        })
        .collect();
    rows.sort_by(|a, b| lxc_format::natural_cmp(&a[0], &b[0]));
    let header: Vec<String> = [
        "NAME",
        "TYPE",
        "MANAGED",
        "IPV4",
        "IPV6",
        "DESCRIPTION",
        "USED BY",
        "STATE",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let raw = lxc_format::decode_list(&all, &lxc_format::NETWORK);
    match format {
        Format::Json => print!("{}", lxc_format::to_json(&raw)),
        Format::Yaml => print!("{}", lxc_format::to_yaml(&raw)),
        _ => print!("{}", output::render(format, &header, &rows, &Value::Null)?),
    }
    Ok(())
}

pub fn show(client: &Client, name: &str) -> Result<()> {
    let mut n = client.get(&url(name))?;
    lxc_format::sort_used_by(&mut n);
    print!(
        "{}",
        lxc_format::to_yaml(&lxc_format::decode(&n, &lxc_format::NETWORK))
    );
    Ok(())
}

pub fn create(client: &Client, name: &str, config: &[String]) -> Result<()> {
    client.request(
        "POST",
        "/1.0/networks",
        Some(&json!({"name": name, "type": "bridge", "config": pairs(config)?, "description": ""})),
    )?;
    println!("Network {name} created");
    Ok(())
}

pub fn delete(client: &Client, name: &str) -> Result<()> {
    client.request("DELETE", &url(name), None)?;
    println!("Network {name} deleted");
    Ok(())
}

pub fn get(client: &Client, name: &str, key: &str) -> Result<()> {
    // lxc prints a key only when the network has it.
    if let Some(v) = client.get(&url(name))?["config"].get(key) {
        println!("{}", s(v));
    }
    Ok(())
}

/// Sets keys with a PUT of the network's writable part, as lxc does.
pub fn set(client: &Client, name: &str, config: &[String]) -> Result<()> {
    let keys = get_config(config)?;
    let mut n = client.get(&url(name))?;
    if !n["managed"].as_bool().unwrap_or(false) {
        bail!("Only managed networks can be modified");
    }
    if !n["config"].is_object() {
        n["config"] = json!({});
    }
    for (k, v) in keys {
        n["config"][k] = v;
    }
    client.request(
        "PUT",
        &url(name),
        Some(&json!({"config": n["config"], "description": n["description"]})),
    )?;
    Ok(())
}

pub fn unset(client: &Client, name: &str, key: &str) -> Result<()> {
    let mut n = client.get(&url(name))?;
    if !n["managed"].as_bool().unwrap_or(false) {
        bail!("Only managed networks can be modified");
    }
    if let Some(c) = n["config"].as_object_mut() {
        c.remove(key);
    }
    client.request(
        "PUT",
        &url(name),
        Some(&json!({"config": n["config"], "description": n["description"]})),
    )?;
    Ok(())
}

pub fn rename(client: &Client, name: &str, new: &str) -> Result<()> {
    client.request("POST", &url(name), Some(&json!({"name": new})))?;
    println!("Network {name} renamed to {new}");
    Ok(())
}

const NETWORK_HELP: &str = "### This is a YAML representation of the network.
### Any line starting with a '# will be ignored.
###
### A network consists of a set of configuration items.
###
### An example would look like:
### name: lxdbr0
### config:
###   ipv4.address: 10.62.42.1/24
###   ipv4.nat: true
###   ipv6.address: fd00:56ad:9f7a:9800::1/64
###   ipv6.nat: true
### managed: true
### type: bridge
###
### Note that only the configuration can be changed.";

pub fn edit(client: &Client, name: &str) -> Result<()> {
    let n = client.get(&url(name))?;
    let put_of = |text: &str| -> Result<Value> {
        let new = editor::parse_yaml(text)?;
        Ok(json!({
            "config": editor::string_map(&new["config"])?,
            "description": editor::string_field(&new["description"])?,
        }))
    };
    // lxc checks this only before opening the editor; piped YAML goes to the daemon.
    if std::io::IsTerminal::is_terminal(&std::io::stdin())
        && !n["managed"].as_bool().unwrap_or(false)
    {
        bail!("Only managed networks can be modified");
    }
    let current = lxc_format::to_yaml(&lxc_format::decode(&n, &lxc_format::NETWORK));
    editor::edit(NETWORK_HELP, &current, |text| {
        client.request("PUT", &url(name), Some(&put_of(text)?))?;
        Ok(())
    })
}

/// LXD's `units.GetByteSizeString(n, 2)` (decimal units).
fn decimal_size(n: i64) -> String {
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    for unit in ["kB", "MB", "GB", "TB", "PB", "EB"] {
        value /= 1000.0;
        if value < 1000.0 {
            return format!("{value:.2}{unit}");
        }
    }
    format!("{value:.2}EB")
}

/// `lxc network info`: the interface, its addresses and counters, and its bridge.
pub fn info(client: &Client, name: &str) -> Result<()> {
    let st = client.get(&format!("{}/state", url(name)))?;
    println!("Name: {name}");
    println!("MAC address: {}", s(&st["hwaddr"]));
    println!("MTU: {}", st["mtu"].as_i64().unwrap_or(0));
    println!("State: {}", s(&st["state"]));
    println!("Type: {}", s(&st["type"]));
    let addresses = st["addresses"].as_array().cloned().unwrap_or_default();
    if !addresses.is_empty() {
        println!("\nIP addresses:");
        for a in addresses {
            println!(
                "  {}\t{}/{} ({})",
                s(&a["family"]),
                s(&a["address"]),
                s(&a["netmask"]),
                s(&a["scope"])
            );
        }
    }
    let c = &st["counters"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    println!("\nNetwork usage:");
    println!(
        "  Bytes received: {}",
        decimal_size(n(&c["bytes_received"]))
    );
    println!("  Bytes sent: {}", decimal_size(n(&c["bytes_sent"])));
    println!("  Packets received: {}", n(&c["packets_received"]));
    println!("  Packets sent: {}", n(&c["packets_sent"]));
    let b = &st["bridge"];
    if b.is_object() {
        let list = |v: &Value| {
            v.as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("\nBridge:");
        println!("  ID: {}", s(&b["id"]));
        println!("  STP: {}", b["stp"].as_bool().unwrap_or(false));
        println!("  Forward delay: {}", n(&b["forward_delay"]));
        println!("  Default VLAN ID: {}", n(&b["vlan_default"]));
        println!(
            "  VLAN filtering: {}",
            b["vlan_filtering"].as_bool().unwrap_or(false)
        );
        println!("  Upper devices: {}", list(&b["upper_devices"]));
    }
    Ok(())
}

pub fn list_leases(client: &Client, name: &str, format: Format) -> Result<()> {
    let leases = client.get(&format!("{}/leases", url(name)))?;
    let items = leases.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|l| {
            vec![
                s(&l["hostname"]),
                s(&l["hwaddr"]),
                s(&l["address"]),
                s(&l["type"]).to_uppercase(),
            ]
        })
        .collect();
    let header: Vec<String> = ["HOSTNAME", "MAC ADDRESS", "IP ADDRESS", "TYPE"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let raw = lxc_format::decode_list(&Value::Array(items), &lxc_format::NETWORK_LEASE);
    match format {
        Format::Json => print!("{}", lxc_format::to_json(&raw)),
        Format::Yaml => print!("{}", lxc_format::to_yaml(&raw)),
        _ => print!("{}", output::render(format, &header, &rows, &Value::Null)?),
    }
    Ok(())
}

/// lxc's `network attach[-profile] NETWORK TARGET [DEVICE [INTERFACE]]`: a NIC on a
/// managed network by `network=`, on an unmanaged link as macvlan (bridged on a bridge).
pub fn attach(
    client: &Client,
    o: Owner,
    network: &str,
    target: &str,
    dev_name: Option<&str>,
    interface: Option<&str>,
) -> Result<()> {
    let n = client.get(&url(network))?;
    let mut nic = if n["managed"].as_bool().unwrap_or(false) {
        json!({"type": "nic", "network": network})
    } else {
        let nictype = if n["type"] == "bridge" {
            "bridged"
        } else {
            "macvlan"
        };
        json!({"type": "nic", "nictype": nictype, "parent": network})
    };
    if let Some(i) = interface {
        nic["name"] = json!(i);
    }
    device::add_device(client, o, target, dev_name.unwrap_or(network), nic)
}

/// lxc's `network detach[-profile] NETWORK TARGET [DEVICE]`.
pub fn detach(
    client: &Client,
    o: Owner,
    network: &str,
    target: &str,
    dev_name: Option<&str>,
) -> Result<()> {
    let on_network =
        |d: &Value| d["type"] == "nic" && (d["parent"] == network || d["network"] == network);
    if let Some(dev) = dev_name {
        let owner_url = match o {
            Owner::Instance => format!("/1.0/instances/{}", encode(target)),
            Owner::Profile => format!("/1.0/profiles/{}", encode(target)),
        };
        if let Some(d) = client.get(&owner_url)?["devices"].get(dev) {
            if !on_network(d) {
                bail!("The specified device doesn't match the network");
            }
        }
    }
    device::detach(
        client,
        o,
        target,
        dev_name,
        on_network,
        "No device found for this network",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_in_decimal_units_as_lxc() {
        assert_eq!(decimal_size(999), "999B");
        assert_eq!(decimal_size(1500), "1.50kB");
        assert_eq!(decimal_size(2_000_000), "2.00MB");
    }
}
