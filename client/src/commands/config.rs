//! `hutch config get|set|unset|show|edit` and `hutch config device add|remove|list`.

use std::io::Read;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::http::{encode, Client};

fn url(name: &str) -> String {
    format!("/1.0/instances/{}", encode(name))
}

fn writable(v: &Value) -> Value {
    json!({
        "architecture": v["architecture"], "config": v["config"], "devices": v["devices"],
        "ephemeral": v["ephemeral"], "profiles": v["profiles"], "description": v["description"],
    })
}

pub fn get(client: &Client, name: &str, key: &str) -> Result<()> {
    let v = client.get(&url(name))?;
    println!("{}", v["config"][key].as_str().unwrap_or(""));
    Ok(())
}

/// Sets keys with a PATCH (only what changed is sent).
pub fn set(client: &Client, name: &str, pairs: &[String]) -> Result<()> {
    let mut config = serde_json::Map::new();
    let mut it = pairs.iter();
    while let Some(item) = it.next() {
        match item.split_once('=') {
            Some((k, v)) => config.insert(k.into(), v.into()),
            None => match it.next() {
                Some(v) => config.insert(item.clone(), v.clone().into()),
                None => bail!("no value for {item:?}"),
            },
        };
    }
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
