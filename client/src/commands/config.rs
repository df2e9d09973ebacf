//! `hutch config get|set|unset|show|edit`, on an instance or, without an instance name, on
//! the server (as `lxc config` does), and `hutch config device add|remove|set|list`.

use std::io::Read;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::http::{encode, Client};

/// `hutch config ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Print a key: `[INSTANCE] KEY` (the server's without an instance).
    Get {
        first: String,
        second: Option<String>,
        /// The instance's key after profiles are applied.
        #[arg(long)]
        expanded: bool,
    },
    /// Set keys: `[INSTANCE] KEY=VALUE...` or `[INSTANCE] KEY VALUE` (the server's without
    /// an instance).
    #[command(after_long_help = server_keys_help())]
    Set {
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Unset a key: `[INSTANCE] KEY` (the server's without an instance).
    Unset {
        first: String,
        second: Option<String>,
    },
    /// Show the config of an instance, or of the server without one.
    Show {
        name: Option<String>,
        #[arg(long)]
        expanded: bool,
    },
    /// Replace the config of an instance (or of the server) with YAML from stdin.
    Edit { name: Option<String> },
    #[command(subcommand)]
    Device(DeviceCmd),
}

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// Add a device: NAME DEVICE TYPE [KEY=VALUE...].
    Add {
        name: String,
        device: String,
        kind: String,
        props: Vec<String>,
    },
    Remove {
        name: String,
        device: String,
    },
    /// Set device keys: NAME DEVICE KEY=VALUE... (a profile's device is overridden).
    Set {
        name: String,
        device: String,
        #[arg(required = true)]
        props: Vec<String>,
    },
    List {
        name: String,
    },
}

/// Runs one `hutch config` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Get {
            first,
            second: None,
            expanded,
        } => {
            if expanded {
                bail!("--expanded cannot be used with a server");
            }
            server::get(c, &first)
        }
        Cmd::Get {
            first,
            second: Some(key),
            expanded,
        } => get(c, &first, &key, expanded),
        Cmd::Set { args } => match set_target(&args) {
            SetTarget::Server(pairs) => server::set(c, &pairs),
            SetTarget::Instance(name, pairs) => set(c, &name, &pairs),
        },
        Cmd::Unset {
            first,
            second: None,
        } => server::unset(c, &first),
        Cmd::Unset {
            first,
            second: Some(key),
        } => unset(c, &first, &key),
        Cmd::Show {
            name: None,
            expanded,
        } => {
            if expanded {
                bail!("--expanded cannot be used with a server");
            }
            server::show(c)
        }
        Cmd::Show {
            name: Some(name),
            expanded,
        } => show(c, &name, expanded),
        Cmd::Edit { name: None } => server::edit(c),
        Cmd::Edit { name: Some(name) } => edit(c, &name),
        Cmd::Device(DeviceCmd::Add {
            name,
            device,
            kind,
            props,
        }) => device_add(c, &name, &device, &kind, &props),
        Cmd::Device(DeviceCmd::Remove { name, device }) => device_remove(c, &name, &device),
        Cmd::Device(DeviceCmd::List { name }) => device_list(c, &name),
        Cmd::Device(DeviceCmd::Set {
            name,
            device,
            props,
        }) => device_set(c, &name, &device, &props),
    }
}

/// The server keys, from the api crate's table, for `hutch config set --help`.
fn server_keys_help() -> String {
    let mut out = String::from("Server keys:\n");
    for k in hutch_api::server_config::SERVER_KEYS {
        let default = if k.default.is_empty() {
            String::new()
        } else {
            format!(" (default {})", k.default)
        };
        out.push_str(&format!("  {}{default}\n      {}\n", k.name, k.doc));
    }
    for (prefix, doc) in hutch_api::server_config::SERVER_KEY_PREFIXES {
        out.push_str(&format!("  {prefix}*\n      {doc}\n"));
    }
    out
}

/// What `config set` acts on, and its `KEY=VALUE` or `KEY VALUE` arguments.
#[derive(Debug, PartialEq, Eq)]
enum SetTarget {
    Server(Vec<String>),
    Instance(String, Vec<String>),
}

/// `lxc config set`'s rule: the server when every argument is `KEY=VALUE`, when the first
/// is a key (keys have a dot, instance names cannot), or for a lone `KEY VALUE`; else the
/// first argument names the instance.
fn set_target(args: &[String]) -> SetTarget {
    let all_pairs = args.iter().all(|a| a.contains('='));
    let any_pair = args.iter().any(|a| a.contains('='));
    let first_is_key = args.first().is_some_and(|a| a.contains('.'));
    if all_pairs || first_is_key || (args.len() == 2 && !any_pair) {
        SetTarget::Server(args.to_vec())
    } else {
        SetTarget::Instance(args[0].clone(), args[1..].to_vec())
    }
}

/// `KEY=VALUE...` or one `KEY VALUE` into a config map.
fn config_pairs(items: &[String]) -> Result<serde_json::Map<String, Value>> {
    let mut config = serde_json::Map::new();
    let mut it = items.iter();
    while let Some(item) = it.next() {
        match item.split_once('=') {
            Some((k, v)) => config.insert(k.into(), v.into()),
            None => match it.next() {
                Some(v) => config.insert(item.clone(), v.clone().into()),
                None => bail!("no value for {item:?}"),
            },
        };
    }
    Ok(config)
}

/// The server's config (`/1.0`).
mod server {
    use super::*;

    pub fn get(client: &Client, key: &str) -> Result<()> {
        let v = client.get("/1.0")?;
        let value = match &v["config"][key] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            // A write-only key that is set shows as `true`.
            other => other.to_string(),
        };
        println!("{value}");
        Ok(())
    }

    /// Sets keys with a PATCH of just them; the daemon validates against its key table.
    pub fn set(client: &Client, pairs: &[String]) -> Result<()> {
        let config = config_pairs(pairs)?;
        client.request("PATCH", "/1.0", Some(&json!({ "config": config })))?;
        Ok(())
    }

    /// An empty value returns a key to its default.
    pub fn unset(client: &Client, key: &str) -> Result<()> {
        client.request("PATCH", "/1.0", Some(&json!({"config": {key: ""}})))?;
        Ok(())
    }

    pub fn show(client: &Client) -> Result<()> {
        let v = client.get("/1.0")?;
        print!(
            "{}",
            serde_yaml::to_string(&json!({"config": v["config"]}))?
        );
        Ok(())
    }

    /// Replaces the whole server config with YAML from stdin (what `show` prints).
    pub fn edit(client: &Client) -> Result<()> {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        let put: Value = serde_yaml::from_str(&text)?;
        client.request("PUT", "/1.0", Some(&put))?;
        Ok(())
    }
}

fn url(name: &str) -> String {
    format!("/1.0/instances/{}", encode(name))
}

fn writable(v: &Value) -> Value {
    json!({
        "architecture": v["architecture"], "config": v["config"], "devices": v["devices"],
        "ephemeral": v["ephemeral"], "profiles": v["profiles"], "description": v["description"],
    })
}

pub fn get(client: &Client, name: &str, key: &str, expanded: bool) -> Result<()> {
    let v = client.get(&url(name))?;
    let config = if expanded {
        "expanded_config"
    } else {
        "config"
    };
    println!("{}", v[config][key].as_str().unwrap_or(""));
    Ok(())
}

/// Sets keys with a PATCH (only what changed is sent).
pub fn set(client: &Client, name: &str, pairs: &[String]) -> Result<()> {
    let config = config_pairs(pairs)?;
    client.request("PATCH", &url(name), Some(&json!({"config": config})))?;
    Ok(())
}

/// Unsets a key: a full PUT without it.
pub fn unset(client: &Client, name: &str, key: &str) -> Result<()> {
    let v = client.get(&url(name))?;
    let mut put = writable(&v);
    if let Some(c) = put["config"].as_object_mut() {
        c.remove(key);
    }
    client.run("PUT", &url(name), Some(&put))?;
    Ok(())
}

pub fn show(client: &Client, name: &str, expanded: bool) -> Result<()> {
    let v = client.get(&url(name))?;
    let mut out = writable(&v);
    if expanded {
        out["config"] = v["expanded_config"].clone();
        out["devices"] = v["expanded_devices"].clone();
    }
    print!("{}", serde_yaml::to_string(&out)?);
    Ok(())
}

/// Replaces the writable config with YAML read from stdin.
pub fn edit(client: &Client, name: &str) -> Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let put: Value = serde_yaml::from_str(&text)?;
    client.run("PUT", &url(name), Some(&put))?;
    Ok(())
}

pub fn device_add(
    client: &Client,
    name: &str,
    device: &str,
    kind: &str,
    props: &[String],
) -> Result<()> {
    let v = client.get(&url(name))?;
    if v["devices"].get(device).is_some() {
        bail!("The device already exists");
    }
    let mut dev = super::pairs(props)?;
    dev.insert("type".into(), kind.into());
    let mut put = writable(&v);
    put["devices"][device] = Value::Object(dev);
    client.run("PUT", &url(name), Some(&put))?;
    println!("Device {device} added to {name}");
    Ok(())
}

/// Sets keys of an instance device; a device that only a profile has is copied into the
/// instance first (LXD's `config device override`).
pub fn device_set(client: &Client, name: &str, device: &str, props: &[String]) -> Result<()> {
    let v = client.get(&url(name))?;
    let mut put = writable(&v);
    let current = match v["devices"].get(device) {
        Some(d) => d.clone(),
        None => match v["expanded_devices"].get(device) {
            Some(d) => d.clone(),
            None => bail!("The device doesn't exist"),
        },
    };
    let mut dev = current.as_object().cloned().unwrap_or_default();
    dev.extend(super::pairs(props)?);
    put["devices"][device] = Value::Object(dev);
    client.run("PUT", &url(name), Some(&put))?;
    Ok(())
}

pub fn device_remove(client: &Client, name: &str, device: &str) -> Result<()> {
    let v = client.get(&url(name))?;
    let mut put = writable(&v);
    if put["devices"]
        .as_object_mut()
        .and_then(|d| d.remove(device))
        .is_none()
    {
        bail!("The device doesn't exist");
    }
    client.run("PUT", &url(name), Some(&put))?;
    println!("Device {device} removed from {name}");
    Ok(())
}

pub fn device_list(client: &Client, name: &str) -> Result<()> {
    let v = client.get(&url(name))?;
    for k in v["devices"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        println!("{k}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(args: &[&str]) -> SetTarget {
        set_target(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn set_tells_server_keys_from_instances_as_lxc_does() {
        for server in [
            &["core.https_address", ":8443"][..],
            &["core.https_address=:8443"],
            &["a=1", "b=2"],
            &["user.x", "y"],
            &["key", "value"],
        ] {
            assert_eq!(
                target(server),
                SetTarget::Server(strings(server)),
                "{server:?}"
            );
        }
        assert_eq!(
            target(&["c1", "limits.memory", "64MiB"]),
            SetTarget::Instance("c1".into(), strings(&["limits.memory", "64MiB"]))
        );
        assert_eq!(
            target(&["c1", "limits.memory=64MiB", "limits.cpu=1"]),
            SetTarget::Instance(
                "c1".into(),
                strings(&["limits.memory=64MiB", "limits.cpu=1"])
            )
        );
        assert_eq!(
            target(&["c1", "limits.memory=64MiB"]),
            SetTarget::Instance("c1".into(), strings(&["limits.memory=64MiB"]))
        );
    }

    #[test]
    fn pairs_take_both_spellings() {
        let m = config_pairs(&strings(&["a=1", "b", "2"])).unwrap();
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "2");
        assert!(config_pairs(&strings(&["lonely"])).is_err());
    }
}
