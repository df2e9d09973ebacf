//! Instance lifecycle: launch, init, start, stop, restart, pause, delete, rename, list, info.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{pairs, resolve_image};
use crate::http::{encode, Client};
use crate::output::{self, Format};

/// The instance commands, at the top level of `hutch` as in `lxc`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Create and start an instance from an image.
    Launch(CreateArgs),
    /// Create an instance from an image.
    Init(CreateArgs),
    /// Start instances.
    Start { names: Vec<String> },
    /// Stop instances.
    Stop {
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
        #[arg(long, default_value_t = -1)]
        timeout: i64,
    },
    /// Restart instances.
    Restart {
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
        #[arg(long, default_value_t = -1)]
        timeout: i64,
    },
    /// Freeze instances.
    Pause { names: Vec<String> },
    /// Delete instances.
    Delete {
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
    },
    /// Snapshot an instance.
    Snapshot {
        name: String,
        snapshot: Option<String>,
    },
    /// Restore an instance from one of its snapshots.
    Restore { name: String, snapshot: String },
    /// Copy an instance or a snapshot (SOURCE[/SNAPSHOT]) to a new instance.
    Copy {
        source: String,
        name: String,
        /// Leave the source's snapshots behind.
        #[arg(long)]
        instance_only: bool,
    },
    /// Rename an instance, or move it to another storage pool (`--storage`).
    #[command(alias = "move")]
    Rename {
        from: String,
        to: Option<String>,
        /// Move the instance's volumes to this storage pool (it must be stopped).
        #[arg(short, long)]
        storage: Option<String>,
    },
    /// List instances.
    List {
        filter: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
        #[arg(short, long, default_value = "ns46tS")]
        columns: String,
    },
    /// Show an instance's state and resources.
    Info { name: String },
}

/// Runs one instance command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Launch(a) => create(c, &a, true),
        Cmd::Init(a) => create(c, &a, false),
        Cmd::Start { names } => start(c, &names),
        Cmd::Stop {
            names,
            force,
            timeout,
        } => names
            .iter()
            .try_for_each(|n| state(c, n, "stop", timeout, force)),
        Cmd::Restart {
            names,
            force,
            timeout,
        } => names
            .iter()
            .try_for_each(|n| state(c, n, "restart", timeout, force)),
        Cmd::Pause { names } => names
            .iter()
            .try_for_each(|n| state(c, n, "freeze", -1, false)),
        Cmd::Delete { names, force } => delete(c, &names, force),
        Cmd::Rename { from, to, storage } => rename(c, &from, to.as_deref(), storage.as_deref()),
        Cmd::Snapshot { name, snapshot } => self::snapshot(c, &name, snapshot.as_deref()),
        Cmd::Restore { name, snapshot } => restore(c, &name, &snapshot),
        Cmd::Copy {
            source,
            name,
            instance_only,
        } => copy(c, &source, &name, instance_only),
        Cmd::List {
            filter,
            format,
            columns,
        } => list(c, filter.as_deref(), format, &columns),
        Cmd::Info { name } => info(c, &name),
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Image: a local alias or fingerprint.
    pub image: String,
    /// Instance name (generated when missing).
    pub name: Option<String>,
    /// Profiles to apply, in order (default: "default").
    #[arg(short = 'p', long = "profile")]
    pub profiles: Vec<String>,
    /// Config keys, KEY=VALUE.
    #[arg(short = 'c', long = "config")]
    pub config: Vec<String>,
    /// Create without any profile.
    #[arg(long)]
    pub no_profiles: bool,
    /// Delete the instance when it stops.
    #[arg(short = 'e', long)]
    pub ephemeral: bool,
    /// Put eth0 on this network instead of the profiles' NIC.
    #[arg(short = 'n', long)]
    pub network: Option<String>,
    /// Put the root disk on this storage pool instead of the profiles'.
    #[arg(short = 's', long)]
    pub storage: Option<String>,
}

/// The instance's own devices from `--network` and `--storage`.
fn devices(args: &CreateArgs) -> Value {
    let mut d = json!({});
    if let Some(n) = &args.network {
        d["eth0"] = json!({"type": "nic", "network": n, "name": "eth0"});
    }
    if let Some(p) = &args.storage {
        d["root"] = json!({"type": "disk", "path": "/", "pool": p});
    }
    d
}

/// `hutch init` / `hutch launch`.
pub fn create(client: &Client, args: &CreateArgs, start: bool) -> Result<()> {
    let fingerprint = resolve_image(client, &args.image)?;
    let profiles = if args.no_profiles {
        Some(vec![])
    } else if args.profiles.is_empty() {
        None
    } else {
        Some(args.profiles.clone())
    };
    let body = json!({
        "name": args.name.clone().unwrap_or_default(),
        "type": "container",
        "profiles": profiles,
        "config": pairs(&args.config)?,
        "devices": devices(args),
        "ephemeral": args.ephemeral,
        "source": {"type": "image", "fingerprint": fingerprint},
    });
    let env = client.request("POST", "/1.0/instances", Some(&body))?;
    let name = env.metadata["resources"]["instances"][0]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    println!("Creating {name}");
    client.wait_op(&env)?;
    if start {
        println!("Starting {name}");
        state(client, &name, "start", -1, false)?;
    }
    Ok(())
}

/// `PUT /state` and wait.
pub fn state(client: &Client, name: &str, action: &str, timeout: i64, force: bool) -> Result<()> {
    client.run(
        "PUT",
        &format!("/1.0/instances/{}/state", encode(name)),
        Some(&json!({"action": action, "timeout": timeout, "force": force})),
    )?;
    Ok(())
}

pub fn status_of(client: &Client, name: &str) -> Result<String> {
    let st = client.get(&format!("/1.0/instances/{}/state", encode(name)))?;
    Ok(st["status"].as_str().unwrap_or("").to_string())
}

/// `hutch start`: thaws a frozen instance, as lxc does.
pub fn start(client: &Client, names: &[String]) -> Result<()> {
    for n in names {
        let action = if status_of(client, n)? == "Frozen" {
            "unfreeze"
        } else {
            "start"
        };
        state(client, n, action, -1, false)?;
    }
    Ok(())
}

pub fn delete(client: &Client, names: &[String], force: bool) -> Result<()> {
    for n in names {
        if let Some((inst, snap)) = n.split_once('/') {
            client.run(
                "DELETE",
                &format!("/1.0/instances/{}/snapshots/{}", encode(inst), encode(snap)),
                None,
            )?;
            continue;
        }
        if status_of(client, n)? != "Stopped" {
            if !force {
                bail!("The instance is currently running, stop it first or pass --force");
            }
            state(client, n, "stop", -1, true)?;
        }
        // An ephemeral instance is gone once stopped.
        if client.get(&format!("/1.0/instances/{}", encode(n))).is_ok() {
            client.run("DELETE", &format!("/1.0/instances/{}", encode(n)), None)?;
        }
    }
    Ok(())
}

/// `hutch move FROM [TO] [--storage POOL]`: a rename, a move to another pool, or both.
pub fn rename(client: &Client, from: &str, to: Option<&str>, storage: Option<&str>) -> Result<()> {
    if to.is_none() && storage.is_none() {
        anyhow::bail!("give a new name, --storage POOL, or both");
    }
    let mut body = json!({"name": to.unwrap_or(from)});
    if let Some(pool) = storage {
        body["pool"] = json!(pool);
    }
    client.run(
        "POST",
        &format!("/1.0/instances/{}", encode(from)),
        Some(&body),
    )?;
    Ok(())
}

fn ipv4(v: &Value) -> String {
    let mut out = Vec::new();
    if let Some(net) = v["state"]["network"].as_object() {
        for (dev, n) in net {
            for a in n["addresses"].as_array().into_iter().flatten() {
                if a["family"] == "inet" && a["scope"] == "global" {
                    out.push(format!("{} ({dev})", a["address"].as_str().unwrap_or("")));
                }
            }
        }
    }
    out.join("\n")
}

fn column(v: &Value, c: char) -> (String, String) {
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    match c {
        'n' => ("NAME".into(), s(&v["name"])),
        's' => ("STATE".into(), s(&v["status"]).to_uppercase()),
        '4' => ("IPV4".into(), ipv4(v)),
        '6' => ("IPV6".into(), String::new()),
        't' => ("TYPE".into(), s(&v["type"]).to_uppercase()),
        'S' => (
            "SNAPSHOTS".into(),
            v["snapshots"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0)
                .to_string(),
        ),
        'p' => (
            "PID".into(),
            v["state"]["pid"]
                .as_i64()
                .filter(|p| *p > 0)
                .map(|p| p.to_string())
                .unwrap_or_default(),
        ),
        'P' => (
            "PROFILES".into(),
            v["profiles"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
        ),
        'l' => ("LAST USED AT".into(), s(&v["last_used_at"])),
        'b' => ("STORAGE POOL".into(), "default".into()),
        'c' => ("CREATED AT".into(), s(&v["created_at"])),
        _ => ("DESCRIPTION".into(), s(&v["description"])),
    }
}

pub fn list(client: &Client, filter: Option<&str>, format: Format, cols: &str) -> Result<()> {
    let cols = output::columns(cols)?;
    let all = client.get("/1.0/instances?recursion=2")?;
    let items: Vec<Value> = all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| filter.is_none_or(|f| v["name"].as_str().is_some_and(|n| n.starts_with(f))))
        .collect();
    let headers: Vec<String> = cols.iter().map(|c| column(&Value::Null, *c).0).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| cols.iter().map(|c| column(v, *c).1).collect())
        .collect();
    print!(
        "{}",
        output::render(format, &headers, &rows, &Value::Array(items))?
    );
    Ok(())
}

pub fn info(client: &Client, name: &str) -> Result<()> {
    let v = client.get(&format!("/1.0/instances/{}?recursion=1", encode(name)))?;
    let st = &v["state"];
    println!("Name: {}", v["name"].as_str().unwrap_or(""));
    println!(
        "Status: {}",
        v["status"].as_str().unwrap_or("").to_uppercase()
    );
    println!("Type: {}", v["type"].as_str().unwrap_or(""));
    println!("Architecture: {}", v["architecture"].as_str().unwrap_or(""));
    if st["pid"].as_i64().unwrap_or(0) > 0 {
        println!("PID: {}", st["pid"]);
    }
    println!("Created: {}", v["created_at"].as_str().unwrap_or(""));
    println!("Last Used: {}", v["last_used_at"].as_str().unwrap_or(""));
    if let Some(snaps) = v["snapshots"].as_array().filter(|a| !a.is_empty()) {
        println!("\nSnapshots:");
        for s in snaps {
            println!(
                "  {} (taken at {})",
                s["name"].as_str().unwrap_or(""),
                s["created_at"].as_str().unwrap_or("")
            );
        }
    }
    if v["status"] == "Running" || v["status"] == "Frozen" {
        println!("\nResources:");
        println!("  Processes: {}", st["processes"]);
        println!(
            "  CPU usage (in seconds): {}",
            st["cpu"]["usage"].as_i64().unwrap_or(0) / 1_000_000_000
        );
        println!(
            "  Memory (current): {}",
            human(st["memory"]["usage"].as_i64().unwrap_or(0))
        );
        println!(
            "  Memory (peak): {}",
            human(st["memory"]["usage_peak"].as_i64().unwrap_or(0))
        );
    }
    Ok(())
}

fn human(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", units[i])
}

/// `hutch snapshot NAME [SNAP]`.
pub fn snapshot(client: &Client, name: &str, snap: Option<&str>) -> Result<()> {
    client.run(
        "POST",
        &format!("/1.0/instances/{}/snapshots", encode(name)),
        Some(&json!({"name": snap.unwrap_or(""), "stateful": false})),
    )?;
    Ok(())
}

/// `hutch restore NAME SNAP`.
pub fn restore(client: &Client, name: &str, snap: &str) -> Result<()> {
    client.run(
        "PUT",
        &format!("/1.0/instances/{}", encode(name)),
        Some(&json!({"restore": snap})),
    )?;
    Ok(())
}

/// `hutch copy SOURCE[/SNAP] NAME`: a new, stopped instance with the source's config.
pub fn copy(client: &Client, source: &str, name: &str, instance_only: bool) -> Result<()> {
    let base = source.split('/').next().unwrap_or(source);
    let src = client.get(&format!("/1.0/instances/{}", encode(base)))?;
    let config: serde_json::Map<String, Value> = src["config"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with("volatile.") || k.as_str() == "volatile.base_image")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let body = json!({
        "name": name, "type": "container", "config": config, "devices": src["devices"], "profiles": src["profiles"],
        "ephemeral": false, "source": {"type": "copy", "source": source, "instance_only": instance_only},
    });
    client.run("POST", "/1.0/instances", Some(&body))?;
    Ok(())
}
