//! The API calls that make, change and remove one object of a stack, and the commands
//! run inside instances (provision, healthcheck). Every call is a plain `/1.0` request,
//! so a remote hutchd or an LXD server works the same.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::current::Object;
use super::model::{Health, Instance, Network, Profile, Volume, PROVISIONED_KEY};
use crate::commands::file::{push, PushOptions};
use crate::commands::instance::{image_source, state};
use crate::config::ClientConfig;
use crate::http::{encode, Client};

fn instance_url(name: &str) -> String {
    format!("/1.0/instances/{}", encode(name))
}

fn volume_url(pool: &str, name: &str) -> String {
    format!(
        "/1.0/storage-pools/{}/volumes/custom/{}",
        encode(pool),
        encode(name)
    )
}

pub fn create_network(c: &Client, n: &Network) -> Result<()> {
    c.run(
        "POST",
        "/1.0/networks",
        Some(&json!({"name": n.name, "description": n.description, "config": n.config})),
    )?;
    Ok(())
}

/// Sets the keys the file gives (PATCH: the server's own keys stay).
pub fn update_network(c: &Client, n: &Network) -> Result<()> {
    let mut body = json!({"config": n.config});
    if !n.description.is_empty() {
        body["description"] = json!(n.description);
    }
    c.run(
        "PATCH",
        &format!("/1.0/networks/{}", encode(&n.name)),
        Some(&body),
    )?;
    Ok(())
}

pub fn create_volume(c: &Client, v: &Volume) -> Result<()> {
    c.run(
        "POST",
        &format!("/1.0/storage-pools/{}/volumes/custom", encode(&v.pool)),
        Some(&json!({"name": v.name, "type": "custom", "description": v.description, "config": v.config})),
    )?;
    Ok(())
}

pub fn update_volume(c: &Client, v: &Volume) -> Result<()> {
    let mut body = json!({"config": v.config});
    if !v.description.is_empty() {
        body["description"] = json!(v.description);
    }
    c.run("PATCH", &volume_url(&v.pool, &v.name), Some(&body))?;
    Ok(())
}

pub fn create_profile(c: &Client, p: &Profile) -> Result<()> {
    c.run(
        "POST",
        "/1.0/profiles",
        Some(&json!({"name": p.name, "description": p.description, "config": p.config, "devices": p.devices})),
    )?;
    Ok(())
}

/// Replaces the profile (PUT): the instances using it see the change live.
pub fn update_profile(c: &Client, p: &Profile) -> Result<()> {
    c.run(
        "PUT",
        &format!("/1.0/profiles/{}", encode(&p.name)),
        Some(&json!({"description": p.description, "config": p.config, "devices": p.devices})),
    )?;
    Ok(())
}

/// Creates the instance, stopped.
pub fn create_instance(c: &Client, i: &Instance) -> Result<()> {
    let conf = ClientConfig::load()?;
    let source = image_source(c, &conf, &i.image)?;
    let body = json!({
        "name": i.name,
        "type": "container",
        "description": i.description,
        "profiles": i.profiles,
        "config": i.config,
        "devices": i.devices,
        "source": source,
    });
    c.run("POST", "/1.0/instances", Some(&body))?;
    Ok(())
}

/// Replaces the instance's config, devices and profiles (PUT), applied live to a running
/// instance; the server's own keys (`volatile.*`, `image.*`) and the provisioned mark stay.
pub fn update_instance(c: &Client, i: &Instance, now: &Object) -> Result<()> {
    let mut config = i.config.clone();
    for (k, v) in &now.config {
        if k.starts_with("volatile.") || k.starts_with("image.") || k == PROVISIONED_KEY {
            config.insert(k.clone(), v.clone());
        }
    }
    c.run(
        "PUT",
        &instance_url(&i.name),
        Some(&json!({"description": i.description, "config": config, "devices": i.devices, "profiles": i.profiles})),
    )?;
    Ok(())
}

pub fn start(c: &Client, name: &str) -> Result<()> {
    state(c, name, "start", -1, false)
}

/// Stops (forced) when running, then deletes.
pub fn delete_instance(c: &Client, name: &str) -> Result<()> {
    let st = c.get(&format!("{}/state", instance_url(name)))?;
    if st["status"] != "Stopped" {
        state(c, name, "stop", -1, true)?;
    }
    c.run("DELETE", &instance_url(name), None)?;
    Ok(())
}

pub fn delete_profile(c: &Client, name: &str) -> Result<()> {
    c.request("DELETE", &format!("/1.0/profiles/{}", encode(name)), None)?;
    Ok(())
}

pub fn delete_network(c: &Client, name: &str) -> Result<()> {
    c.run("DELETE", &format!("/1.0/networks/{}", encode(name)), None)?;
    Ok(())
}

/// `key` is `pool/name`.
pub fn delete_volume(c: &Client, key: &str) -> Result<()> {
    let (pool, name) = key
        .split_once('/')
        .ok_or_else(|| anyhow!("{key:?} is not POOL/NAME"))?;
    c.run("DELETE", &volume_url(pool, name), None)?;
    Ok(())
}

/// Runs `argv` in the instance without a terminal; (exit code, stdout and stderr).
pub fn exec(c: &Client, name: &str, argv: &[String]) -> Result<(i64, String)> {
    let body = json!({
        "command": argv, "environment": {}, "wait-for-websocket": false, "interactive": false,
        "record-output": true,
    });
    let env = c.request("POST", &format!("{}/exec", instance_url(name)), Some(&body))?;
    let op = c.get(&format!("{}/wait?timeout=-1", env.operation))?;
    let meta = &op["metadata"];
    let Some(code) = meta["return"].as_i64() else {
        bail!("{}", op["err"].as_str().unwrap_or("exec failed"));
    };
    let mut text = String::new();
    for fd in ["1", "2"] {
        if let Some(url) = meta["output"][fd].as_str() {
            if let Ok(raw) = c.raw("GET", url, &[], b"") {
                text.push_str(&String::from_utf8_lossy(&raw.body));
            }
        }
    }
    Ok((code, text))
}

/// Pushes the files, runs the provision commands, then marks the instance provisioned.
pub fn provision(c: &Client, i: &Instance) -> Result<()> {
    for f in &i.files {
        let opts = PushOptions {
            recursive: f.source.is_dir(),
            create_dirs: true,
            uid: f.uid,
            gid: f.gid,
            mode: f.mode,
        };
        push(
            c,
            std::slice::from_ref(&f.source),
            &format!("{}{}", i.name, f.target),
            &opts,
        )
        .with_context(|| format!("push {} to {}", f.source.display(), f.target))?;
    }
    for (n, argv) in i.provision.iter().enumerate() {
        let (code, out) = exec(c, &i.name, argv)?;
        if code != 0 {
            bail!(
                "provision command {} ({}) exited {code}: {}",
                n + 1,
                argv.join(" "),
                out.trim()
            );
        }
    }
    c.run(
        "PATCH",
        &instance_url(&i.name),
        Some(&json!({"config": {PROVISIONED_KEY: "true"}})),
    )?;
    Ok(())
}

/// Runs the healthcheck until it succeeds, up to its retries.
pub fn wait_healthy(c: &Client, name: &str, h: &Health) -> Result<()> {
    let mut last = String::new();
    for n in 0..h.retries {
        if n > 0 {
            std::thread::sleep(h.interval);
        }
        match exec(c, name, &h.command) {
            Ok((0, _)) => return Ok(()),
            Ok((code, out)) => last = format!("exit {code}: {}", out.trim()),
            Err(e) => last = e.to_string(),
        }
    }
    bail!(
        "{name} is not healthy after {} tries of its healthcheck (last: {last})",
        h.retries
    )
}

/// The instance's first global IPv4 address, if any.
pub fn ipv4(state: &Value) -> Option<String> {
    let nets = state["network"].as_object()?;
    nets.iter()
        .filter(|(nic, _)| nic.as_str() != "lo")
        .flat_map(|(_, n)| n["addresses"].as_array().into_iter().flatten())
        .find(|a| a["family"] == "inet" && a["scope"] == "global")
        .and_then(|a| a["address"].as_str().map(str::to_string))
}
