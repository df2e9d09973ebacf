//! `hutch storage list|info` and `hutch storage volume ...`.

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::http::{encode, Client};
use crate::output;

/// `hutch storage ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// List storage pools.
    List,
    /// Space used and available on a pool, and what uses it.
    Info { pool: String },
    /// Create a pool: NAME DRIVER [KEY=VALUE...] (dir, btrfs, zfs; source=, size=).
    Create {
        pool: String,
        driver: String,
        config: Vec<String>,
    },
    /// Delete an unused pool.
    Delete { pool: String },
    #[command(subcommand)]
    Volume(VolumeCmd),
}

/// `hutch storage volume ...`.
#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create a custom volume (KEY=VALUE config, e.g. size=1GiB).
    Create {
        pool: String,
        name: String,
        config: Vec<String>,
    },
    List {
        pool: String,
    },
    Show {
        pool: String,
        name: String,
    },
    /// Space used by a volume: POOL [TYPE/]NAME (type: custom, container or image).
    Info {
        pool: String,
        name: String,
    },
    Delete {
        pool: String,
        name: String,
    },
    /// Attach a custom volume to an instance at PATH (as a disk device named after it).
    Attach {
        pool: String,
        name: String,
        instance: String,
        path: String,
    },
    /// Detach a custom volume from an instance.
    Detach {
        pool: String,
        name: String,
        instance: String,
    },
    /// Snapshot a custom volume.
    Snapshot {
        pool: String,
        name: String,
        snapshot: Option<String>,
    },
    /// Copy a custom volume: POOL/NAME[/SNAPSHOT] POOL/NEW (its snapshots too, unless
    /// --volume-only).
    Copy {
        source: String,
        target: String,
        #[arg(long)]
        volume_only: bool,
    },
    /// Rename a custom volume, or move it to another pool: POOL/NAME POOL/NEW.
    #[command(alias = "rename")]
    Move {
        source: String,
        target: String,
    },
    /// Set config keys of a custom volume (KEY=VALUE; size=1GiB, or size= to lift it).
    Set {
        pool: String,
        name: String,
        config: Vec<String>,
    },
}

/// Runs one `hutch storage` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List => list(c),
        Cmd::Info { pool } => info(c, &pool),
        Cmd::Create {
            pool,
            driver,
            config,
        } => create_pool(c, &pool, &driver, &config),
        Cmd::Delete { pool } => delete_pool(c, &pool),
        Cmd::Volume(v) => run_volume(c, v),
    }
}

fn run_volume(c: &Client, cmd: VolumeCmd) -> Result<()> {
    match cmd {
        VolumeCmd::Info { pool, name } => volume_info(c, &pool, &name),
        VolumeCmd::Create { pool, name, config } => create(c, &pool, &name, &config),
        VolumeCmd::List { pool } => list_volumes(c, &pool),
        VolumeCmd::Show { pool, name } => show(c, &pool, &name),
        VolumeCmd::Delete { pool, name } => delete(c, &pool, &name),
        VolumeCmd::Attach {
            pool,
            name,
            instance,
            path,
        } => super::config::device_add(
            c,
            &instance,
            &name,
            "disk",
            &[
                format!("pool={pool}"),
                format!("source={name}"),
                format!("path={path}"),
            ],
        ),
        VolumeCmd::Detach { name, instance, .. } => {
            super::config::device_remove(c, &instance, &name)
        }
        VolumeCmd::Snapshot {
            pool,
            name,
            snapshot,
        } => self::snapshot(c, &pool, &name, snapshot.as_deref()),
        VolumeCmd::Copy {
            source,
            target,
            volume_only,
        } => copy(c, &source, &target, volume_only),
        VolumeCmd::Move { source, target } => move_volume(c, &source, &target),
        VolumeCmd::Set { pool, name, config } => set(c, &pool, &name, &config),
    }
}

fn vol_url(pool: &str, name: &str) -> String {
    format!(
        "/1.0/storage-pools/{}/volumes/custom/{}",
        encode(pool),
        encode(name)
    )
}

pub fn list(client: &Client) -> Result<()> {
    let pools = client.get("/1.0/storage-pools?recursion=1")?;
    let rows: Vec<Vec<String>> = pools
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                p["name"].as_str().unwrap_or("").into(),
                p["driver"].as_str().unwrap_or("").into(),
                p["config"]["source"].as_str().unwrap_or("").into(),
                p["used_by"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "NAME".into(),
                "DRIVER".into(),
                "SOURCE".into(),
                "USED BY".into()
            ],
            &rows
        )
    );
    Ok(())
}

pub fn info(client: &Client, pool: &str) -> Result<()> {
    let p = client.get(&format!("/1.0/storage-pools/{}", encode(pool)))?;
    let r = client.get(&format!("/1.0/storage-pools/{}/resources", encode(pool)))?;
    let gib = |v: &Value| v.as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    println!(
        "info:\n  name: {}\n  driver: {}\n  used by: {}",
        p["name"].as_str().unwrap_or(""),
        p["driver"].as_str().unwrap_or(""),
        p["used_by"].as_array().map(|a| a.len()).unwrap_or(0)
    );
    println!(
        "  space used: {:.2}GiB\n  total space: {:.2}GiB",
        gib(&r["space"]["used"]),
        gib(&r["space"]["total"])
    );
    Ok(())
}

pub fn create_pool(client: &Client, pool: &str, driver: &str, config: &[String]) -> Result<()> {
    client.request(
        "POST",
        "/1.0/storage-pools",
        Some(&json!({"name": pool, "driver": driver, "config": super::pairs(config)?, "description": ""})),
    )?;
    println!("Storage pool {pool} created");
    Ok(())
}

pub fn delete_pool(client: &Client, pool: &str) -> Result<()> {
    client.request(
        "DELETE",
        &format!("/1.0/storage-pools/{}", encode(pool)),
        None,
    )?;
    println!("Storage pool {pool} deleted");
    Ok(())
}

/// `POOL [TYPE/]NAME`: the volume's usage (and its limit when it has one).
pub fn volume_info(client: &Client, pool: &str, name: &str) -> Result<()> {
    let (kind, name) = name.split_once('/').unwrap_or(("custom", name));
    let st = client.get(&format!(
        "/1.0/storage-pools/{}/volumes/{}/{}/state",
        encode(pool),
        encode(kind),
        encode(name)
    ))?;
    let mib = |v: &Value| v.as_i64().unwrap_or(0) as f64 / (1u64 << 20) as f64;
    println!("Name: {name}\nType: {kind}\nPool: {pool}");
    println!("Usage: {:.2}MiB", mib(&st["usage"]["used"]));
    if st["usage"]["total"].as_i64().unwrap_or(-1) > 0 {
        println!("Total: {:.2}MiB", mib(&st["usage"]["total"]));
    }
    Ok(())
}

pub fn create(client: &Client, pool: &str, name: &str, config: &[String]) -> Result<()> {
    let config = super::pairs(config)?;
    client.request(
        "POST",
        &format!("/1.0/storage-pools/{}/volumes/custom", encode(pool)),
        Some(&json!({"name": name, "type": "custom", "config": config})),
    )?;
    println!("Storage volume {name} created");
    Ok(())
}

pub fn list_volumes(client: &Client, pool: &str) -> Result<()> {
    let vols = client.get(&format!(
        "/1.0/storage-pools/{}/volumes/custom?recursion=1",
        encode(pool)
    ))?;
    let rows: Vec<Vec<String>> = vols
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            vec![
                "custom".into(),
                v["name"].as_str().unwrap_or("").into(),
                v["config"]["size"].as_str().unwrap_or("").into(),
                v["used_by"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "TYPE".into(),
                "NAME".into(),
                "SIZE".into(),
                "USED BY".into()
            ],
            &rows
        )
    );
    Ok(())
}

pub fn show(client: &Client, pool: &str, name: &str) -> Result<()> {
    print!(
        "{}",
        serde_yaml::to_string(&client.get(&vol_url(pool, name))?)?
    );
    Ok(())
}

pub fn delete(client: &Client, pool: &str, name: &str) -> Result<()> {
    client.request("DELETE", &vol_url(pool, name), None)?;
    println!("Storage volume {name} deleted");
    Ok(())
}

pub fn snapshot(client: &Client, pool: &str, name: &str, snap: Option<&str>) -> Result<()> {
    client.run(
        "POST",
        &format!("{}/snapshots", vol_url(pool, name)),
        Some(&json!({"name": snap.unwrap_or("")})),
    )?;
    Ok(())
}

/// `POOL/NAME[/SNAPSHOT]` split into the pool and the rest.
fn pool_and_name(arg: &str) -> Result<(&str, &str)> {
    arg.split_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("expected POOL/NAME, got {arg:?}"))
}

/// `hutch storage volume copy POOL/NAME[/SNAPSHOT] POOL/NEW`.
pub fn copy(client: &Client, source: &str, target: &str, volume_only: bool) -> Result<()> {
    let (src_pool, src) = pool_and_name(source)?;
    let (pool, name) = pool_and_name(target)?;
    let vol = src.split('/').next().unwrap_or(src);
    let from = client.get(&vol_url(src_pool, vol))?;
    client.run(
        "POST",
        &format!("/1.0/storage-pools/{}/volumes/custom", encode(pool)),
        Some(&json!({
            "name": name,
            "type": "custom",
            "config": from["config"],
            "description": from["description"],
            "source": {"type": "copy", "name": src, "pool": src_pool, "volume_only": volume_only},
        })),
    )?;
    println!("Storage volume copied successfully!");
    Ok(())
}

/// `hutch storage volume move|rename POOL/NAME POOL/NEW`.
pub fn move_volume(client: &Client, source: &str, target: &str) -> Result<()> {
    let (src_pool, src) = pool_and_name(source)?;
    let (pool, name) = pool_and_name(target)?;
    client.run(
        "POST",
        &vol_url(src_pool, src),
        Some(&json!({"name": name, "pool": pool})),
    )?;
    println!("Storage volume moved to {pool}/{name}");
    Ok(())
}

/// `hutch storage volume set POOL NAME KEY=VALUE...`.
pub fn set(client: &Client, pool: &str, name: &str, config: &[String]) -> Result<()> {
    let mut keys = serde_json::Map::new();
    for kv in config {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad key=value pair: {kv}"))?;
        keys.insert(k.to_string(), v.into());
    }
    client.run(
        "PATCH",
        &vol_url(pool, name),
        Some(&json!({"config": keys})),
    )?;
    Ok(())
}
