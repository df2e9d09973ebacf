//! `hutch storage list|info|show|get|set|unset|edit|create|delete` and
//! `hutch storage volume ...`, with lxc's argument shapes and output.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::device::{self, get_config, Owner};
use super::{edit as editor, lxc_format};
use crate::http::{encode, Client};
use crate::output::{self, Format};

/// `hutch storage ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// List storage pools.
    #[command(alias = "ls")]
    List {
        /// `[REMOTE:]`.
        remote: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Space used and available on a pool, and what uses it.
    Info {
        pool: String,
        /// Sizes in bytes.
        #[arg(long)]
        bytes: bool,
    },
    /// Show a pool as YAML (`--resources`: its space).
    Show {
        pool: String,
        #[arg(long)]
        resources: bool,
    },
    /// Get a pool config key: POOL KEY.
    Get { pool: String, key: String },
    /// Set pool config keys: POOL KEY VALUE, or POOL KEY=VALUE...
    Set {
        pool: String,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Unset a pool config key: POOL KEY.
    Unset { pool: String, key: String },
    /// Edit a pool as YAML ($VISUAL/$EDITOR on a terminal, else stdin).
    Edit { pool: String },
    /// Create a pool: NAME DRIVER [KEY=VALUE...] (dir, btrfs, zfs; source=, size=).
    Create {
        pool: String,
        driver: String,
        config: Vec<String>,
    },
    /// Delete an unused pool.
    #[command(alias = "rm")]
    Delete { pool: String },
    /// Storage volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
}

/// `hutch storage volume ...`.
#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create a custom volume: POOL NAME [KEY=VALUE...] (e.g. size=1GiB).
    Create {
        pool: String,
        name: String,
        config: Vec<String>,
        /// Content type (only filesystem volumes are supported).
        #[arg(long = "type", default_value = "filesystem")]
        content_type: String,
    },
    /// List a pool's volumes.
    #[command(alias = "ls")]
    List {
        pool: String,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
        /// Columns: t(ype) n(ame) d(escription) c(ontent type) u(sed by) U(sage).
        #[arg(short, long, default_value = "tndcu")]
        columns: String,
    },
    /// Show a volume as YAML: POOL [TYPE/]NAME[/SNAPSHOT].
    Show { pool: String, name: String },
    /// Space used by a volume: POOL [TYPE/]NAME (type: custom, container or image).
    Info { pool: String, name: String },
    /// Get a volume config key: POOL [TYPE/]NAME KEY.
    Get {
        pool: String,
        name: String,
        key: String,
    },
    /// Set volume config keys: POOL [TYPE/]NAME KEY=VALUE... (size=1GiB).
    Set {
        pool: String,
        name: String,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Unset a volume config key: POOL [TYPE/]NAME KEY.
    Unset {
        pool: String,
        name: String,
        key: String,
    },
    /// Edit a volume as YAML ($VISUAL/$EDITOR on a terminal, else stdin).
    Edit { pool: String, name: String },
    /// Delete a volume or a snapshot: POOL NAME[/SNAPSHOT].
    #[command(alias = "rm")]
    Delete { pool: String, name: String },
    /// Attach a custom volume to an instance: POOL VOLUME INSTANCE [DEVICE] [PATH].
    Attach {
        pool: String,
        name: String,
        instance: String,
        #[arg(num_args = 0..=2)]
        rest: Vec<String>,
    },
    /// Attach a custom volume to a profile: POOL VOLUME PROFILE [DEVICE] [PATH].
    AttachProfile {
        pool: String,
        name: String,
        profile: String,
        #[arg(num_args = 0..=2)]
        rest: Vec<String>,
    },
    /// Detach a custom volume from a profile: POOL VOLUME PROFILE [DEVICE].
    DetachProfile {
        pool: String,
        name: String,
        profile: String,
        device: Option<String>,
    },
    /// Detach a custom volume from an instance: POOL VOLUME INSTANCE [DEVICE].
    Detach {
        pool: String,
        name: String,
        instance: String,
        device: Option<String>,
    },
    /// Snapshot a custom volume: POOL VOLUME [SNAPSHOT].
    Snapshot {
        pool: String,
        name: String,
        snapshot: Option<String>,
        /// Replace a snapshot of that name.
        #[arg(long)]
        reuse: bool,
    },
    /// Restore a custom volume from one of its snapshots: POOL VOLUME SNAPSHOT.
    Restore {
        pool: String,
        name: String,
        snapshot: String,
    },
    /// Copy a custom volume: POOL/NAME[/SNAPSHOT] POOL/NEW (its snapshots too, unless
    /// --volume-only).
    #[command(alias = "cp")]
    Copy {
        source: String,
        target: String,
        #[arg(long)]
        volume_only: bool,
    },
    /// Move a custom volume, to another name or pool: POOL/NAME POOL/NEW.
    #[command(alias = "mv")]
    Move { source: String, target: String },
    /// Rename a volume or a snapshot: POOL OLD[/SNAP] NEW[/SNAP] (or, as `move`,
    /// POOL/OLD POOL/NEW).
    Rename {
        #[arg(num_args = 2..=3, required = true)]
        args: Vec<String>,
    },
}

/// Runs one `hutch storage` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List { remote, format } => {
            let (c, _) = super::remote::split(c, remote.as_deref().unwrap_or(""))?;
            list(&c, format)
        }
        Cmd::Info { pool, bytes } => info(c, &pool, bytes),
        Cmd::Show { pool, resources } => show_pool(c, &pool, resources),
        Cmd::Get { pool, key } => {
            let p = c.get(&pool_url(&pool))?;
            if let Some(v) = p["config"].get(&key) {
                println!("{}", v.as_str().unwrap_or(""));
            }
            Ok(())
        }
        Cmd::Set { pool, args } => set_pool(c, &pool, &args),
        Cmd::Unset { pool, key } => unset_pool(c, &pool, &key),
        Cmd::Edit { pool } => edit_pool(c, &pool),
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
        VolumeCmd::Create {
            pool,
            name,
            config,
            content_type,
        } => create(c, &pool, &name, &config, &content_type),
        VolumeCmd::List {
            pool,
            format,
            columns,
        } => list_volumes(c, &pool, format, &columns),
        VolumeCmd::Show { pool, name } => show(c, &pool, &name),
        VolumeCmd::Get { pool, name, key } => {
            let v = c.get(&Vol::parse(&pool, &name)?.url())?;
            if let Some(x) = v["config"].get(&key) {
                println!("{}", x.as_str().unwrap_or(""));
            }
            Ok(())
        }
        VolumeCmd::Set { pool, name, args } => set(c, &pool, &name, &get_config(&args)?),
        VolumeCmd::Unset { pool, name, key } => unset(c, &pool, &name, &key),
        VolumeCmd::Edit { pool, name } => edit(c, &pool, &name),
        VolumeCmd::Delete { pool, name } => delete(c, &pool, &name),
        VolumeCmd::Attach {
            pool,
            name,
            instance,
            rest,
        } => attach(c, Owner::Instance, &pool, &name, &instance, &rest),
        VolumeCmd::AttachProfile {
            pool,
            name,
            profile,
            rest,
        } => attach(c, Owner::Profile, &pool, &name, &profile, &rest),
        VolumeCmd::Detach {
            pool,
            name,
            instance,
            device,
        } => detach(
            c,
            Owner::Instance,
            &pool,
            &name,
            &instance,
            device.as_deref(),
        ),
        VolumeCmd::DetachProfile {
            pool,
            name,
            profile,
            device,
        } => detach(c, Owner::Profile, &pool, &name, &profile, device.as_deref()),
        VolumeCmd::Snapshot {
            pool,
            name,
            snapshot,
            reuse,
        } => self::snapshot(c, &pool, &name, snapshot.as_deref(), reuse),
        VolumeCmd::Restore {
            pool,
            name,
            snapshot,
        } => restore(c, &pool, &name, &snapshot),
        VolumeCmd::Copy {
            source,
            target,
            volume_only,
        } => copy(c, &source, &target, volume_only),
        VolumeCmd::Move { source, target } => move_volume(c, &source, &target),
        VolumeCmd::Rename { args } => match &args[..] {
            [pool, name, new] => rename(c, pool, name, new),
            // hutch's earlier spelling, which lxc does not have.
            [source, target] => move_volume(c, source, target),
            _ => bail!("rename takes POOL OLD NEW"),
        },
    }
}

fn pool_url(pool: &str) -> String {
    format!("/1.0/storage-pools/{}", encode(pool))
}

fn vol_url(pool: &str, name: &str) -> String {
    format!(
        "/1.0/storage-pools/{}/volumes/custom/{}",
        encode(pool),
        encode(name)
    )
}

/// A volume argument as lxc parses it: `[TYPE/]NAME[/SNAPSHOT]`, custom by default.
#[derive(Debug, PartialEq)]
struct Vol {
    pool: String,
    kind: String,
    name: String,
    snapshot: Option<String>,
}

impl Vol {
    fn parse(pool: &str, arg: &str) -> Result<Vol> {
        let (kind, rest) = match arg.split_once('/') {
            Some((t, r)) if ["custom", "image", "container", "virtual-machine"].contains(&t) => {
                (t, r)
            }
            _ => ("custom", arg),
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() > 2 {
            bail!("Invalid snapshot name");
        }
        Ok(Vol {
            pool: pool.into(),
            kind: kind.into(),
            name: parts[0].into(),
            snapshot: parts.get(1).map(|s| s.to_string()),
        })
    }

    fn volume_url(&self) -> String {
        format!(
            "/1.0/storage-pools/{}/volumes/{}/{}",
            encode(&self.pool),
            encode(&self.kind),
            encode(&self.name)
        )
    }

    /// The volume's or the snapshot's URL.
    fn url(&self) -> String {
        match &self.snapshot {
            Some(s) => format!("{}/snapshots/{}", self.volume_url(), encode(s)),
            None => self.volume_url(),
        }
    }
}

fn count(v: &Value) -> String {
    v.as_array().map(|a| a.len()).unwrap_or(0).to_string()
}

/// Prints rows, or the objects as lxc's `--format json|yaml` prints them.
fn render(
    format: Format,
    headers: &[&str],
    rows: &[Vec<String>],
    raw: &lxc_format::Node,
) -> Result<()> {
    match format {
        Format::Json => print!("{}", lxc_format::to_json(raw)),
        Format::Yaml => print!("{}", lxc_format::to_yaml(raw)),
        _ => {
            let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
            print!("{}", output::render(format, &headers, rows, &Value::Null)?);
        }
    }
    Ok(())
}

pub fn list(client: &Client, format: Format) -> Result<()> {
    let pools = client.get("/1.0/storage-pools?recursion=1")?;
    let mut rows: Vec<Vec<String>> = pools
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                p["name"].as_str().unwrap_or("").into(),
                p["driver"].as_str().unwrap_or("").into(),
                p["config"]["source"].as_str().unwrap_or("").into(),
                p["description"].as_str().unwrap_or("").into(),
                count(&p["used_by"]),
                p["status"].as_str().unwrap_or("").to_uppercase(),
            ]
        })
        .collect();
    rows.sort_by(|a, b| lxc_format::natural_cmp(&a[0], &b[0]));
    render(
        format,
        &[
            "NAME",
            "DRIVER",
            "SOURCE",
            "DESCRIPTION",
            "USED BY",
            "STATE",
        ],
        &rows,
        &lxc_format::decode_list(&pools, &lxc_format::STORAGE_POOL),
    )
}

/// LXD's `units.GetByteSizeStringIEC(n, 2)`.
pub fn iec(n: i64) -> String {
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"] {
        value /= 1024.0;
        if value < 1024.0 {
            return format!("{value:.2}{unit}");
        }
    }
    format!("{value:.2}EiB")
}

/// `lxc storage info`: two YAML maps, the pool's facts and what uses it by kind.
pub fn info(client: &Client, pool: &str, bytes: bool) -> Result<()> {
    let p = client.get(&pool_url(pool))?;
    let r = client.get(&format!("{}/resources", pool_url(pool)))?;
    let size = |v: &Value| {
        let n = v.as_u64().unwrap_or(0);
        if bytes {
            n.to_string()
        } else {
            iec(n as i64)
        }
    };
    let s = |v: &Value| lxc_format::Node::Str(v.as_str().unwrap_or("").into());
    let info = lxc_format::Node::Map(Some(vec![(
        "info".into(),
        lxc_format::Node::Map(Some(vec![
            ("name".into(), s(&p["name"])),
            ("driver".into(), s(&p["driver"])),
            ("description".into(), s(&p["description"])),
            (
                "total space".into(),
                lxc_format::Node::Str(size(&r["space"]["total"])),
            ),
            (
                "space used".into(),
                lxc_format::Node::Str(size(&r["space"]["used"])),
            ),
        ])),
    )]));
    let mut by_kind: Vec<(String, Vec<lxc_format::Node>)> = Vec::new();
    for u in p["used_by"].as_array().into_iter().flatten() {
        let path = u.as_str().unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        let fields: Vec<&str> = path.get(5..).unwrap_or("").split('/').collect();
        let (mut kind, mut what) = (fields[0], fields.get(1).copied().unwrap_or(""));
        if kind == "storage-pools" {
            kind = "volumes";
            what = fields.get(4).copied().unwrap_or("");
        }
        match by_kind.iter_mut().find(|(k, _)| k == kind) {
            Some((_, list)) => list.push(lxc_format::Node::Str(what.into())),
            None => by_kind.push((kind.into(), vec![lxc_format::Node::Str(what.into())])),
        }
    }
    let used = lxc_format::Node::Map(Some(vec![(
        "used by".into(),
        lxc_format::Node::Map(Some(
            by_kind
                .into_iter()
                .map(|(k, l)| (k, lxc_format::Node::Seq(Some(l))))
                .collect(),
        )),
    )]));
    print!(
        "{}{}",
        lxc_format::to_yaml(&info),
        lxc_format::to_yaml(&used)
    );
    Ok(())
}

fn show_pool(client: &Client, pool: &str, resources: bool) -> Result<()> {
    if resources {
        let r = client.get(&format!("{}/resources", pool_url(pool)))?;
        print!(
            "{}",
            lxc_format::to_yaml(&lxc_format::decode(&r, &lxc_format::POOL_RESOURCES))
        );
        return Ok(());
    }
    let mut p = client.get(&pool_url(pool))?;
    lxc_format::sort_used_by(&mut p);
    print!(
        "{}",
        lxc_format::to_yaml(&lxc_format::decode(&p, &lxc_format::STORAGE_POOL))
    );
    Ok(())
}

fn pool_writable(p: &Value) -> Value {
    json!({"config": p["config"], "description": p["description"]})
}

fn set_pool(client: &Client, pool: &str, args: &[String]) -> Result<()> {
    let keys = get_config(args)?;
    let p = client.get(&pool_url(pool))?;
    let mut put = pool_writable(&p);
    if !put["config"].is_object() {
        put["config"] = json!({});
    }
    for (k, v) in keys {
        put["config"][k] = v;
    }
    client.request("PUT", &pool_url(pool), Some(&put))?;
    Ok(())
}

fn unset_pool(client: &Client, pool: &str, key: &str) -> Result<()> {
    let p = client.get(&pool_url(pool))?;
    let mut put = pool_writable(&p);
    if let Some(c) = put["config"].as_object_mut() {
        c.remove(key);
    }
    client.request("PUT", &pool_url(pool), Some(&put))?;
    Ok(())
}

const POOL_HELP: &str = "### This is a YAML representation of a storage pool.
### Any line starting with a '#' will be ignored.
###
### A storage pool consists of a set of configuration items.
###
### An example would look like:
### name: default
### driver: zfs
### used_by: []
### config:
###   size: \"61203283968\"
###   source: /home/chb/mnt/lxd_test/default.img
###   zfs.pool_name: default";

fn edit_pool(client: &Client, pool: &str) -> Result<()> {
    let p = client.get(&pool_url(pool))?;
    let current = lxc_format::to_yaml(&lxc_format::decode(&p, &lxc_format::STORAGE_POOL));
    editor::edit(POOL_HELP, &current, |text| {
        let new = editor::parse_yaml(text)?;
        let put = json!({
            "config": editor::string_map(&new["config"])?,
            "description": editor::string_field(&new["description"])?,
        });
        client.request("PUT", &pool_url(pool), Some(&put))?;
        Ok(())
    })
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
    client.request("DELETE", &pool_url(pool), None)?;
    println!("Storage pool {pool} deleted");
    Ok(())
}

/// `POOL [TYPE/]NAME`: the volume's usage (and its limit when it has one).
pub fn volume_info(client: &Client, pool: &str, name: &str) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    let v = client.get(&vol.url())?;
    let st = client.get(&format!("{}/state", vol.url()))?;
    println!("Name: {}", v["name"].as_str().unwrap_or(&vol.name));
    if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
        println!("Description: {d}");
    }
    println!("Type: {}", v["type"].as_str().unwrap_or(&vol.kind));
    let ct = v["content_type"]
        .as_str()
        .filter(|c| !c.is_empty())
        .unwrap_or("filesystem");
    println!("Content type: {ct}");
    if let Some(used) = st["usage"]["used"].as_i64() {
        println!("Usage: {}", iec(used));
        if let Some(total) = st["usage"]["total"].as_i64().filter(|t| *t > 0) {
            println!("Total: {}", iec(total));
        }
    }
    if vol.kind == "custom" && vol.snapshot.is_none() {
        let snaps = client.get(&format!("{}/snapshots?recursion=1", vol.url()))?;
        let mut rows: Vec<Vec<String>> = snaps
            .as_array()
            .into_iter()
            .flatten()
            .map(|snap| {
                let name = snap["name"].as_str().unwrap_or("");
                vec![
                    name.rsplit('/').next().unwrap_or(name).to_string(),
                    snap["description"].as_str().unwrap_or("").to_string(),
                    snap["expires_at"]
                        .as_str()
                        .map(table_time)
                        .unwrap_or_else(|| " ".into()),
                ]
            })
            .collect();
        if !rows.is_empty() {
            rows.sort_by(|a, b| lxc_format::natural_cmp(&a[0], &b[0]));
            println!("\nSnapshots:");
            let headers = ["NAME".into(), "DESCRIPTION".into(), "EXPIRES AT".into()];
            print!("{}", output::table(&headers, &rows));
        }
    }
    Ok(())
}

/// A time as lxc's tables show it (`2006/01/02 15:04 MST`), for UTC times.
fn table_time(t: &str) -> String {
    let t = lxc_format::go_time(t);
    match (t.get(0..10), t.get(11..16)) {
        (Some(date), Some(hm)) if t.ends_with('Z') => {
            format!("{} {hm} UTC", date.replace('-', "/"))
        }
        _ => t,
    }
}

pub fn create(
    client: &Client,
    pool: &str,
    name: &str,
    config: &[String],
    content_type: &str,
) -> Result<()> {
    let mut cfg = serde_json::Map::new();
    for entry in config {
        let Some((k, v)) = entry.split_once('=') else {
            bail!("Bad key=value pair: {entry}")
        };
        cfg.insert(k.into(), v.into());
    }
    client.run(
        "POST",
        &format!("/1.0/storage-pools/{}/volumes/custom", encode(pool)),
        Some(&json!({"name": name, "type": "custom", "config": cfg, "content_type": content_type})),
    )?;
    println!("Storage volume {name} created");
    Ok(())
}

/// `lxc storage volume list POOL`: every volume of the pool (custom, instances, images)
/// and the custom volumes' snapshots.
pub fn list_volumes(client: &Client, pool: &str, format: Format, columns: &str) -> Result<()> {
    let vols = client.get(&format!(
        "/1.0/storage-pools/{}/volumes?recursion=1",
        encode(pool)
    ))?;
    let mut cols = Vec::new();
    for entry in columns.split(',') {
        if entry.is_empty() {
            bail!("Empty column entry (redundant, leading or trailing command) in '{columns}'");
        }
        for ch in entry.chars().filter(|c| *c != 'L' && *c != 'e') {
            let header = match ch {
                't' => "TYPE",
                'n' => "NAME",
                'd' => "DESCRIPTION",
                'c' => "CONTENT-TYPE",
                'u' => "USED BY",
                'U' => "USAGE",
                _ => bail!("Unknown column shorthand char '{ch}' in '{entry}'"),
            };
            cols.push((ch, header));
        }
    }
    let items: Vec<Value> = vols.as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for v in &items {
        let name = v["name"].as_str().unwrap_or("");
        let kind = v["type"].as_str().unwrap_or("");
        let mut row = Vec::new();
        for (ch, _) in &cols {
            row.push(match ch {
                't' if name.contains('/') => format!("{kind} (snapshot)"),
                't' => kind.into(),
                'n' => name.into(),
                'd' => v["description"].as_str().unwrap_or("").into(),
                'c' => v["content_type"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .unwrap_or("filesystem")
                    .into(),
                'u' => count(&v["used_by"]),
                _ => {
                    if name.contains('/') || kind == "image" {
                        String::new()
                    } else {
                        let st = client.get(&format!(
                            "/1.0/storage-pools/{}/volumes/{}/{}/state",
                            encode(pool),
                            encode(kind),
                            encode(name)
                        ))?;
                        st["usage"]["used"].as_i64().map(iec).unwrap_or_default()
                    }
                }
            });
        }
        rows.push(row);
    }
    if cols.len() >= 2 {
        // lxc's ByNameAndType: by type, then by name.
        rows.sort_by(|a, b| {
            let (ta, tb) = (
                a[0].split(' ').next().unwrap_or(""),
                b[0].split(' ').next().unwrap_or(""),
            );
            if ta != tb {
                lxc_format::natural_cmp(&a[0], &b[0])
            } else {
                lxc_format::natural_cmp(&a[1], &b[1])
            }
        });
    }
    let headers: Vec<&str> = cols.iter().map(|(_, h)| *h).collect();
    render(
        format,
        &headers,
        &rows,
        &lxc_format::decode_list(&Value::Array(items), &lxc_format::STORAGE_VOLUME),
    )
}

pub fn show(client: &Client, pool: &str, name: &str) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    let mut v = client.get(&vol.url())?;
    lxc_format::sort_used_by(&mut v);
    let shape = if vol.snapshot.is_some() {
        &lxc_format::STORAGE_VOLUME_SNAPSHOT
    } else {
        &lxc_format::STORAGE_VOLUME
    };
    print!("{}", lxc_format::to_yaml(&lxc_format::decode(&v, shape)));
    Ok(())
}

/// Sets volume keys with a PUT of its writable part, as lxc does.
pub fn set(
    client: &Client,
    pool: &str,
    name: &str,
    keys: &serde_json::Map<String, Value>,
) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    if vol.snapshot.is_some() {
        bail!("Snapshots are read-only and can't have their configuration changed");
    }
    let v = client.get(&vol.url())?;
    let mut put = json!({"config": v["config"], "description": v["description"]});
    if !put["config"].is_object() {
        put["config"] = json!({});
    }
    for (k, x) in keys {
        put["config"][k] = x.clone();
    }
    client.run("PUT", &vol.url(), Some(&put))?;
    Ok(())
}

/// Unsets a volume key (`size` lifts the quota).
pub fn unset(client: &Client, pool: &str, name: &str, key: &str) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    if vol.snapshot.is_some() {
        bail!("Snapshots are read-only and can't have their configuration changed");
    }
    let v = client.get(&vol.url())?;
    let mut put = json!({"config": v["config"], "description": v["description"]});
    if let Some(c) = put["config"].as_object_mut() {
        c.remove(key);
    }
    client.run("PUT", &vol.url(), Some(&put))?;
    Ok(())
}

const VOLUME_HELP: &str = "### This is a YAML representation of a storage volume.
### Any line starting with a '# will be ignored.
###
### A storage volume consists of a set of configuration items.
###
### name: vol1
### type: custom
### used_by: []
### config:
###   size: \"61203283968\"";

/// Edits a volume's (or a snapshot's description) as YAML.
pub fn edit(client: &Client, pool: &str, name: &str) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    let v = client.get(&vol.url())?;
    let shape = if vol.snapshot.is_some() {
        &lxc_format::STORAGE_VOLUME_SNAPSHOT
    } else {
        &lxc_format::STORAGE_VOLUME
    };
    let current = lxc_format::to_yaml(&lxc_format::decode(&v, shape));
    editor::edit(VOLUME_HELP, &current, |text| {
        let new = editor::parse_yaml(text)?;
        let put = if vol.snapshot.is_some() {
            json!({"description": editor::string_field(&new["description"])?})
        } else {
            json!({
                "config": editor::string_map(&new["config"])?,
                "description": editor::string_field(&new["description"])?,
            })
        };
        client.run("PUT", &vol.url(), Some(&put))?;
        Ok(())
    })
}

pub fn delete(client: &Client, pool: &str, name: &str) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    client.run("DELETE", &vol.url(), None)?;
    println!("Storage volume {name} deleted");
    Ok(())
}

/// `attach[-profile] POOL VOLUME TARGET [DEVICE] [PATH]`: a disk device; with one extra
/// argument it is the path and the device is named after the volume.
pub fn attach(
    client: &Client,
    o: Owner,
    pool: &str,
    name: &str,
    target: &str,
    rest: &[String],
) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    if vol.kind != "custom" {
        bail!("Only \"custom\" volumes can be attached to instances");
    }
    let (dev_name, path) = match rest {
        [] => (name.to_string(), String::new()),
        [path] => (name.to_string(), path.clone()),
        [dev_name, path, ..] => (dev_name.clone(), path.clone()),
    };
    let dev = json!({"type": "disk", "pool": pool, "source": vol.name, "path": path});
    device::add_device(client, o, target, &dev_name, dev)
}

/// `detach[-profile] POOL VOLUME TARGET [DEVICE]`: the disk device of that volume goes.
pub fn detach(
    client: &Client,
    o: Owner,
    pool: &str,
    name: &str,
    target: &str,
    dev: Option<&str>,
) -> Result<()> {
    device::detach(
        client,
        o,
        target,
        dev,
        |d| d["type"] == "disk" && d["pool"] == pool && d["source"] == name,
        "No device found for this storage volume",
    )
}

pub fn snapshot(
    client: &Client,
    pool: &str,
    name: &str,
    snap: Option<&str>,
    reuse: bool,
) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    if vol.kind != "custom" {
        bail!("Only \"custom\" volumes can be snapshotted");
    }
    client.get(&vol.volume_url())?;
    if let (true, Some(s)) = (reuse, snap) {
        let url = format!("{}/snapshots/{}", vol.volume_url(), encode(s));
        if client.get(&url).is_ok() {
            client.run("DELETE", &url, None)?;
        }
    }
    client.run(
        "POST",
        &format!("{}/snapshots", vol.volume_url()),
        Some(&json!({"name": snap.unwrap_or("")})),
    )?;
    Ok(())
}

/// `restore POOL VOLUME SNAPSHOT`: a PUT with `restore`, as lxc sends it.
pub fn restore(client: &Client, pool: &str, name: &str, snap: &str) -> Result<()> {
    client.get(&vol_url(pool, name))?;
    client.run("PUT", &vol_url(pool, name), Some(&json!({"restore": snap})))?;
    Ok(())
}

/// `rename POOL OLD[/SNAP] NEW[/SNAP]`.
pub fn rename(client: &Client, pool: &str, name: &str, new: &str) -> Result<()> {
    let vol = Vol::parse(pool, name)?;
    let shown = match &vol.snapshot {
        Some(s) => format!("{}/{s}", vol.name),
        None => vol.name.clone(),
    };
    let new_name = match &vol.snapshot {
        Some(_) => {
            let Some((parent, snap)) = new.split_once('/') else {
                bail!("Invalid new snapshot name");
            };
            if parent != vol.name {
                bail!("Invalid new snapshot name, parent volume must be the same as source");
            }
            snap.to_string()
        }
        None => new.to_string(),
    };
    client.run("POST", &vol.url(), Some(&json!({"name": new_name})))?;
    println!("Renamed storage volume from \"{shown}\" to \"{new_name}\"");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_arguments_parse_as_lxc_parses_them() {
        let v = Vol::parse("p", "custom/v1/s1").unwrap();
        assert_eq!(
            (v.kind.as_str(), v.name.as_str(), v.snapshot.as_deref()),
            ("custom", "v1", Some("s1"))
        );
        assert_eq!(
            v.url(),
            "/1.0/storage-pools/p/volumes/custom/v1/snapshots/s1"
        );
        let v = Vol::parse("p", "container/c1").unwrap();
        assert_eq!((v.kind.as_str(), v.name.as_str()), ("container", "c1"));
        let v = Vol::parse("p", "v1/s1").unwrap();
        assert_eq!(
            (v.kind.as_str(), v.snapshot.as_deref()),
            ("custom", Some("s1"))
        );
        assert!(Vol::parse("p", "a/b/c").is_err());
    }

    #[test]
    fn sizes_and_names_sort_and_print_as_lxc() {
        assert_eq!(iec(512), "512B");
        assert_eq!(iec(1536), "1.50KiB");
        assert_eq!(iec(20 << 20), "20.00MiB");
        assert_eq!(table_time("2030-01-02T03:04:05.5Z"), "2030/01/02 03:04 UTC");
        assert_eq!(table_time("0001-01-01T00:00:00Z"), "0001/01/01 00:00 UTC");
        let mut names = vec!["v10", "v2", "a", "v1"];
        names.sort_by(|a, b| lxc_format::natural_cmp(a, b));
        assert_eq!(names, vec!["a", "v1", "v2", "v10"]);
    }
}
