//! What the server has now: every instance, profile, network and custom volume (not only
//! the stack's: a same-named object of someone else's must be seen to be refused).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::Value;

use super::model::{Devices, Map, STACK_KEY};
use crate::http::{encode, Client};

/// One object as the server shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object {
    pub description: String,
    pub config: Map,
    pub devices: Devices,
    pub profiles: Vec<String>,
    /// Instances: `Running`, `Stopped`, ...
    pub status: String,
}

impl Object {
    /// The stack this object carries the label of, if any.
    pub fn stack(&self) -> Option<&str> {
        self.config.get(STACK_KEY).map(String::as_str)
    }
}

/// The server's objects by name (volumes by `pool/name`).
#[derive(Debug, Default)]
pub struct Current {
    pub networks: BTreeMap<String, Object>,
    pub volumes: BTreeMap<String, Object>,
    pub profiles: BTreeMap<String, Object>,
    pub instances: BTreeMap<String, Object>,
}

fn map(v: &Value) -> Map {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An object from its JSON (`config`, `devices`, `profiles`, `description`, `status`).
pub fn object(v: &Value) -> Object {
    Object {
        description: v["description"].as_str().unwrap_or_default().to_string(),
        config: map(&v["config"]),
        devices: v["devices"]
            .as_object()
            .map(|m| m.iter().map(|(k, d)| (k.clone(), map(d))).collect())
            .unwrap_or_default(),
        profiles: v["profiles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        status: v["status"].as_str().unwrap_or_default().to_string(),
    }
}

fn named(list: &Value) -> BTreeMap<String, Object> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?.to_string(), object(v))))
        .collect()
}

/// Reads the server's objects.
pub fn read(client: &Client) -> Result<Current> {
    let instances = named(
        &client
            .get("/1.0/instances?recursion=1")
            .context("list instances")?,
    );
    let profiles = named(
        &client
            .get("/1.0/profiles?recursion=1")
            .context("list profiles")?,
    );
    let networks = named(
        &client
            .get("/1.0/networks?recursion=1")
            .context("list networks")?,
    );
    let mut volumes = BTreeMap::new();
    let pools = client
        .get("/1.0/storage-pools")
        .context("list storage pools")?;
    for url in pools
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let pool = url.rsplit('/').next().unwrap_or_default().to_string();
        let vols = client
            .get(&format!(
                "/1.0/storage-pools/{}/volumes?recursion=1",
                encode(&pool)
            ))
            .with_context(|| format!("list the volumes of pool {pool}"))?;
        for v in vols.as_array().into_iter().flatten() {
            if v["type"] != "custom" {
                continue;
            }
            if let Some(name) = v["name"].as_str() {
                volumes.insert(format!("{pool}/{name}"), object(v));
            }
        }
    }
    Ok(Current {
        networks,
        volumes,
        profiles,
        instances,
    })
}
