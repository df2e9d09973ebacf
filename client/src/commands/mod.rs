//! One module per command group, each with clap arguments and a `run`.

pub mod alias;
pub mod cluster;
pub mod config;
pub mod copy;
pub mod device;
pub mod edit;
pub mod exec;
pub mod export;
pub mod file;
pub mod image;
pub mod image_build;
pub mod image_remote;
pub mod image_streams;
pub mod import;
pub mod info;
pub mod instance;
pub mod list;
pub mod lxc_format;
pub mod misc;
pub mod monitor;
pub mod network;
pub mod operation;
pub mod ports;
pub mod profile;
pub mod query;
pub mod remote;
pub mod stack;
pub mod storage;
pub mod template;
pub mod top;
pub mod trust;
pub mod ui;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::http::Client;

/// Resolves a local image reference (alias, fingerprint prefix) to a fingerprint.
pub fn resolve_image(client: &Client, name: &str) -> Result<String> {
    let name = match name.split_once(':') {
        Some((remote, rest)) => {
            image_remote::require_current(remote)?;
            rest
        }
        None => name,
    };
    if let Ok(alias) = client.get(&format!(
        "/1.0/images/aliases/{}",
        crate::http::encode(name)
    )) {
        if let Some(t) = alias["target"].as_str() {
            return Ok(t.to_string());
        }
    }
    // Only a 404 means no such image: a daemon that cannot be reached says so itself.
    let raw = client.raw(
        "GET",
        &format!("/1.0/images/{}", crate::http::encode(name)),
        &[],
        &[],
    )?;
    if raw.status == 404 {
        bail!("Image {name:?} not found");
    }
    let img = crate::http::parse_envelope(&raw)?.metadata;
    Ok(img["fingerprint"].as_str().unwrap_or_default().to_string())
}

/// `KEY=VALUE` pairs into a JSON map.
pub fn pairs(items: &[String]) -> Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("{item:?} is not KEY=VALUE")
        };
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}
