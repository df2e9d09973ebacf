//! `hutch network list|show|create|delete|set|unset|get|rename|edit|info|list-leases|attach|detach`.

use std::io::Read;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::pairs;

use crate::http::{encode, Client};
use crate::output::{self, Format};

/// `hutch network ...`.
#[derive(Subcommand)]
pub enum Cmd {
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    Show {
        name: String,
    },
    /// Create a bridge: NAME [KEY=VALUE...] (ipv4.address defaults to auto).
    Create {
        name: String,
        config: Vec<String>,
    },
    Delete {
        name: String,
    },
    Get {
        name: String,
        key: String,
    },
    /// Set config keys: NAME KEY=VALUE...
    Set {
        name: String,
        #[arg(required = true)]
        config: Vec<String>,
    },
    Unset {
        name: String,
        key: String,
    },
    Rename {
        name: String,
        new: String,
    },
    /// Replace the network's config with YAML from stdin.
    Edit {
        name: String,
    },
    /// The bridge's addresses, counters and leases.
    Info {
        name: String,
    },
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
    /// Remove INSTANCE's NICs on NETWORK.
    Detach {
        network: String,
        instance: String,
    },
}

/// Runs one `hutch network` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List { format } => list(c, format),
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
            &network,
            &instance,
            device.as_deref(),
            interface.as_deref(),
        ),
        Cmd::Detach { network, instance } => detach(c, &network, &instance),
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
    let rows: Vec<Vec<String>> = items
        .iter()
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
    print!(
        "{}",
        output::render(format, &header, &rows, &Value::Array(items))?
    );
    Ok(())
}

pub fn show(client: &Client, name: &str) -> Result<()> {
    print!("{}", serde_yaml::to_string(&client.get(&url(name))?)?);
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
    println!("{}", s(&client.get(&url(name))?["config"][key]));
    Ok(())
}

pub fn set(client: &Client, name: &str, config: &[String]) -> Result<()> {
    client.request(
        "PATCH",
        &url(name),
        Some(&json!({"config": pairs(config)?})),
    )?;
    Ok(())
}

pub fn unset(client: &Client, name: &str, key: &str) -> Result<()> {
    let mut n = client.get(&url(name))?;
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

pub fn edit(client: &Client, name: &str) -> Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let put: Value = serde_yaml::from_str(&text)?;
    client.request(
        "PUT",
        &url(name),
        Some(&json!({"config": put["config"], "description": put["description"]})),
    )?;
    Ok(())
}

pub fn info(client: &Client, name: &str) -> Result<()> {
    let st = client.get(&format!("{}/state", url(name)))?;
    println!("Name: {name}");
    println!("MAC address: {}", s(&st["hwaddr"]));
    println!("MTU: {}", st["mtu"]);
    println!("State: {}", s(&st["state"]));
    println!("Type: {}", s(&st["type"]));
    println!("\nIP addresses:");
    for a in st["addresses"].as_array().into_iter().flatten() {
        println!(
            "  {}\t{}/{} ({})",
            s(&a["family"]),
            s(&a["address"]),
            s(&a["netmask"]),
            s(&a["scope"])
        );
    }
    let c = &st["counters"];
    println!("\nNetwork usage:");
    println!("  Bytes received: {}", c["bytes_received"]);
    println!("  Bytes sent: {}", c["bytes_sent"]);
    println!("  Packets received: {}", c["packets_received"]);
    println!("  Packets sent: {}", c["packets_sent"]);
    if let Ok(leases) = client.get(&format!("{}/leases", url(name))) {
        let leases = leases.as_array().cloned().unwrap_or_default();
        if !leases.is_empty() {
            println!("\nLeases:");
            for l in leases {
                println!(
                    "  {}\t{}\t{}\t{}",
                    s(&l["hostname"]),
                    s(&l["hwaddr"]),
                    s(&l["address"]),
                    s(&l["type"])
                );
            }
        }
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
    print!(
        "{}",
        output::render(format, &header, &rows, &Value::Array(items))?
    );
    Ok(())
}

/// Adds a NIC on `network` to `instance` (hot-plugged when it runs).
pub fn attach(
    client: &Client,
    network: &str,
    instance: &str,
    device: Option<&str>,
    interface: Option<&str>,
) -> Result<()> {
    let device = device.unwrap_or(network);
    let mut nic = json!({"type": "nic", "network": network});
    if let Some(i) = interface {
        nic["name"] = json!(i);
    }
    client.request(
        "PATCH",
        &format!("/1.0/instances/{}", encode(instance)),
        Some(&json!({"devices": {device: nic}})),
    )?;
    Ok(())
}

/// Removes the NICs of `instance` that are on `network`.
pub fn detach(client: &Client, network: &str, instance: &str) -> Result<()> {
    let iurl = format!("/1.0/instances/{}", encode(instance));
    let mut inst = client.get(&iurl)?;
    let before = inst["devices"].as_object().map(|d| d.len()).unwrap_or(0);
    if let Some(devs) = inst["devices"].as_object_mut() {
        devs.retain(|_, d| !(d["type"] == "nic" && d["network"] == network));
    }
    if inst["devices"].as_object().map(|d| d.len()).unwrap_or(0) == before {
        bail!("No device found for this network");
    }
    let put = json!({
        "architecture": inst["architecture"], "config": inst["config"], "devices": inst["devices"],
        "ephemeral": inst["ephemeral"], "profiles": inst["profiles"], "description": inst["description"],
    });
    client.request("PUT", &iurl, Some(&put))?;
    Ok(())
}
