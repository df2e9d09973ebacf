//! Instance lifecycle: launch, init, start, stop, restart, pause, delete, rename, list, info.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::image_remote::pull_source;
use super::list::{self, ListArgs};
use super::remote::{client_of, image_server, ImageServer};
use super::{info, pairs, resolve_image};
use crate::config::ClientConfig;
use crate::http::{encode, Client};
use crate::output;
use crate::progress::Progress;

/// The instance commands, at the top level of `hutch` as in `lxc`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Create and start an instance from an image.
    Launch(CreateArgs),
    /// Create an instance from an image.
    Init(CreateArgs),
    /// Start instances.
    Start(StartArgs),
    /// Stop instances.
    Stop(StopArgs),
    /// Restart instances.
    Restart(StopArgs),
    /// Freeze instances.
    Pause(PauseArgs),
    /// Delete instances and snapshots.
    #[command(visible_alias = "rm")]
    Delete {
        names: Vec<String>,
        /// Force the removal of running instances.
        #[arg(short, long)]
        force: bool,
        /// Require user confirmation.
        #[arg(short, long)]
        interactive: bool,
    },
    /// Snapshot an instance.
    Snapshot {
        name: String,
        snapshot: Option<String>,
    },
    /// Restore an instance from one of its snapshots.
    Restore { name: String, snapshot: String },
    /// Copy an instance or a snapshot ([REMOTE:]SOURCE[/SNAPSHOT]) to a new instance,
    /// on the same server or another ([REMOTE:][NAME]).
    #[command(visible_alias = "cp")]
    Copy(super::copy::CopyArgs),
    /// Move an instance to another server ([REMOTE:][NAME]), or rename it, or move it to
    /// another storage pool (`--storage`).
    #[command(visible_alias = "mv")]
    Move(super::copy::CopyArgs),
    /// Rename an instance, or move it to another storage pool (`--storage`).
    Rename {
        from: String,
        to: Option<String>,
        /// Move the instance's volumes to this storage pool (it must be stopped).
        #[arg(short, long)]
        storage: Option<String>,
    },
    /// List instances.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show instance or server information.
    Info {
        /// The instance; without it, the server.
        name: Option<String>,
        /// Show the instance's last 100 log lines.
        #[arg(long)]
        show_log: bool,
        /// Show the resources available to the server.
        #[arg(long)]
        resources: bool,
    },
}

/// `pause`: instances by name, or `--all`.
#[derive(Args)]
pub struct PauseArgs {
    pub names: Vec<String>,
    /// Run against all instances.
    #[arg(long)]
    pub all: bool,
}

/// `start`.
#[derive(Args)]
pub struct StartArgs {
    pub names: Vec<String>,
    /// Run against all instances.
    #[arg(long)]
    pub all: bool,
    /// Immediately attach to the console (`--console`; lxc's `--console=vga` is for VMs).
    #[arg(long, num_args = 0..=1, default_missing_value = "console", require_equals = true)]
    pub console: Option<String>,
}

/// `stop` and `restart`.
#[derive(Args)]
pub struct StopArgs {
    pub names: Vec<String>,
    /// Run against all instances.
    #[arg(long)]
    pub all: bool,
    /// Force the instance to shutdown.
    #[arg(short, long)]
    pub force: bool,
    /// Time to wait for the instance before killing it.
    #[arg(long, default_value_t = -1)]
    pub timeout: i64,
    /// Immediately attach to the console.
    #[arg(long, num_args = 0..=1, default_missing_value = "console", require_equals = true)]
    pub console: Option<String>,
}

/// Runs one instance command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    use super::remote::{split, split_all};
    match cmd {
        Cmd::Launch(a) => create(c, &a, true),
        Cmd::Init(a) => create(c, &a, false),
        Cmd::Start(a) => {
            let (c, names) = split_all(c, &a.names)?;
            action(&c, "start", &names, a.all, -1, false, a.console.as_deref())
        }
        Cmd::Stop(a) => {
            let (c, names) = split_all(c, &a.names)?;
            action(
                &c,
                "stop",
                &names,
                a.all,
                a.timeout,
                a.force,
                a.console.as_deref(),
            )
        }
        Cmd::Restart(a) => {
            let (c, names) = split_all(c, &a.names)?;
            action(
                &c,
                "restart",
                &names,
                a.all,
                a.timeout,
                a.force,
                a.console.as_deref(),
            )
        }
        Cmd::Pause(a) => {
            let (c, names) = split_all(c, &a.names)?;
            action(&c, "pause", &names, a.all, -1, false, None)
        }
        Cmd::Delete {
            names,
            force,
            interactive,
        } => {
            let (c, names) = split_all(c, &names)?;
            delete(&c, &names, force, interactive)
        }
        Cmd::Rename { from, to, storage } => {
            let (c, from) = split(c, &from)?;
            let to = match to {
                Some(t) => Some(split(&c, &t)?.1),
                None => None,
            };
            rename(&c, &from, to.as_deref(), storage.as_deref())
        }
        Cmd::Snapshot { name, snapshot } => {
            let (c, name) = split(c, &name)?;
            self::snapshot(&c, &name, snapshot.as_deref())
        }
        Cmd::Restore { name, snapshot } => {
            let (c, name) = split(c, &name)?;
            restore(&c, &name, &snapshot)
        }
        Cmd::Copy(a) => super::copy::copy(c, &a),
        Cmd::Move(a) => super::copy::move_(c, &a),
        Cmd::List(a) => list::list(c, &a),
        Cmd::Info {
            name: Some(name),
            show_log,
            resources,
        } => {
            let (c, name) = split(c, &name)?;
            if name.is_empty() {
                info::server(&c, resources)
            } else {
                info::instance(&c, &name, show_log)
            }
        }
        Cmd::Info {
            name: None,
            resources,
            ..
        } => info::server(c, resources),
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Image: [REMOTE:]ALIAS or fingerprint (`images:debian/12` pulls from a
    /// simplestreams remote).
    pub image: String,
    /// [REMOTE:]Instance name (generated when missing).
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
    /// Publish ports on the host as proxy devices: [ADDR:]HOST:PORT[/udp], PORT[/udp]
    /// (the same number on the host), or `all` (every port the OCI image exposes);
    /// comma-separated or repeated.
    #[arg(long)]
    pub ports: Vec<String>,
    /// In a cluster, the member to make the instance on (default: the member with the
    /// fewest instances).
    #[arg(long)]
    pub target: Option<String>,
}

/// The instance's own devices from `--network`, `--storage` and `--ports`.
fn devices(args: &CreateArgs, ports: &super::ports::Ports) -> Value {
    let mut d = Value::Object(super::ports::devices(&ports.maps));
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
    let conf = ClientConfig::load()?;
    let (remote, name) = match &args.name {
        Some(n) => conf.parse_remote(n)?,
        None => (conf.default_remote.clone(), String::new()),
    };
    let target;
    let client = if remote == conf.default_remote {
        client
    } else {
        target = client_of(&remote, conf.remote(&remote)?)?;
        &target
    };
    let source = image_source(client, &conf, &args.image)?;
    let ports = super::ports::parse(&args.ports)?;
    let profiles = if args.no_profiles {
        Some(vec![])
    } else if args.profiles.is_empty() {
        None
    } else {
        Some(args.profiles.clone())
    };
    let body = json!({
        "name": name,
        "type": "container",
        "profiles": profiles,
        "config": pairs(&args.config)?,
        "devices": devices(args, &ports),
        "ephemeral": args.ephemeral,
        "source": source,
    });
    let path = match &args.target {
        Some(t) => format!("/1.0/instances?target={}", crate::http::encode(t)),
        None => "/1.0/instances".to_string(),
    };
    let env = client.request("POST", &path, Some(&body))?;
    let name = env.metadata["resources"]["instances"][0]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    if !output::quiet() {
        println!("Creating {name}");
    }
    client.wait_op_progress(&env, Some(&Progress::new("Retrieving image: %s")))?;
    if ports.exposed {
        publish_exposed(client, &name, &ports.maps)?;
    }
    if start {
        if !output::quiet() {
            println!("Starting {name}");
        }
        state(client, &name, "start", -1, false)?;
    }
    Ok(())
}

/// `--ports all`: proxy devices for the ports the new instance's image exposes; when they
/// cannot be added, the instance is deleted again (nothing half made).
fn publish_exposed(client: &Client, name: &str, given: &[crate::stack::ports::Port]) -> Result<()> {
    let path = format!("/1.0/instances/{}", encode(name));
    let added = client.get(&path).and_then(|inst| {
        let maps = super::ports::exposed(&inst["config"], given)?;
        if maps.is_empty() {
            eprintln!("The image of {name} exposes no ports: none published");
            return Ok(());
        }
        let body = json!({"devices": super::ports::devices(&maps)});
        client.request("PATCH", &path, Some(&body)).map(drop)
    });
    if let Err(e) = added {
        let _ = client.run("DELETE", &path, None);
        return Err(e.context(format!("Failed to publish the ports of {name}")));
    }
    Ok(())
}

/// The `source` of a new instance on `client` from `[REMOTE:]IMAGE`: a local image, or a
/// pull from a simplestreams or LXD-protocol remote.
pub fn image_source(client: &Client, conf: &ClientConfig, image: &str) -> Result<Value> {
    let (iremote, image) = conf.parse_remote(image)?;
    Ok(match image_server(conf, &iremote)? {
        ImageServer::Streams { url } => pull_source(&url, &image),
        ImageServer::Registry { url } => super::image_remote::registry_pull_source(&url, &image),
        ImageServer::Daemon { client: c, .. } if c.same_server(client) => {
            json!({"type": "image", "fingerprint": resolve_image(client, &image)?})
        }
        ImageServer::Daemon { client: c, remote } => {
            let server = super::image_remote::reach(&c, remote)?;
            super::image_remote::lxd_pull_source(&c, &server, &image)?.0
        }
    })
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

/// `start`, `stop`, `restart`, `pause` of named instances or `--all`, as lxc's cmdAction:
/// one failure among several is reported per instance, then as a whole.
pub fn action(
    client: &Client,
    action: &str,
    names: &[String],
    all: bool,
    timeout: i64,
    force: bool,
    console: Option<&str>,
) -> Result<()> {
    if let Some(kind) = console {
        if all {
            bail!("--console can't be used with --all");
        }
        if names.len() != 1 {
            bail!("--console only works with a single instance");
        }
        if action == "stop" && force {
            bail!("--console can't be used while forcing instance shutdown");
        }
        if kind != "console" {
            bail!("Unknown console type {kind:?}: containers have a text console only");
        }
        let name = &names[0];
        if action == "stop" {
            // Watch the shutdown: the request goes, the console shows it to the end.
            client.request(
                "PUT",
                &format!("/1.0/instances/{}/state", encode(name)),
                Some(&json!({"action": "stop", "timeout": timeout, "force": false})),
            )?;
        } else {
            one_action(client, action, name, timeout, force)?;
        }
        return super::exec::console_attach(client, name);
    }
    let names: Vec<String> = if all {
        if !names.is_empty() {
            bail!("Both --all and instance name given");
        }
        let server = client.get("/1.0")?;
        let bulk = server["api_extensions"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == "instance_bulk_state_change"));
        if bulk {
            let body = json!({"state": {"action": if action == "pause" { "freeze" } else { action },
                "timeout": timeout, "force": force, "stateful": false}});
            client.run("PUT", "/1.0/instances", Some(&body))?;
            return Ok(());
        }
        let list = client.get("/1.0/instances?recursion=1")?;
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|i| match action {
                "start" => i["status"] != "Running",
                "stop" => i["status"] != "Stopped",
                _ => true,
            })
            .map(|i| i["name"].as_str().unwrap_or_default().to_string())
            .collect()
    } else {
        if names.is_empty() {
            bail!("Missing instance name; give one or more names, or --all");
        }
        names.to_vec()
    };
    let results: Vec<(String, Result<()>)> = names
        .iter()
        .map(|n| (n.clone(), one_action(client, action, n, timeout, force)))
        .collect();
    if results.len() == 1 {
        return results.into_iter().next().map(|r| r.1).unwrap_or(Ok(()));
    }
    let mut failed = false;
    for (name, r) in &results {
        if let Err(e) = r {
            failed = true;
            for line in format!("error: {e:#}").lines() {
                eprintln!("{name}: {line}");
            }
        }
    }
    if failed {
        eprintln!();
        bail!("Some instances failed to {action}");
    }
    Ok(())
}

fn one_action(client: &Client, action: &str, name: &str, timeout: i64, force: bool) -> Result<()> {
    let mut action = if action == "pause" { "freeze" } else { action };
    if action == "start" && status_of(client, name)? == "Frozen" {
        // "start" of a frozen instance means "unfreeze".
        action = "unfreeze";
    }
    state(client, name, action, timeout, force)
        .map_err(|e| anyhow::anyhow!("{e:#}\nTry `hutch info --show-log {name}` for more info"))
}

/// Asks `Remove NAME (yes/no): ` on stdout and reads the answer from stdin.
fn confirm_delete(name: &str) -> Result<()> {
    use std::io::Write;
    print!("Remove {name} (yes/no): ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim_end_matches('\n').to_lowercase() != "yes" {
        bail!("User aborted delete operation");
    }
    Ok(())
}

/// `hutch delete`: instances and snapshots, every one checked to exist first.
pub fn delete(client: &Client, names: &[String], force: bool, interactive: bool) -> Result<()> {
    if names.is_empty() {
        bail!("Missing instance name");
    }
    for n in names {
        let (inst, snap) = n.split_once('/').unwrap_or((n, ""));
        let (url, what) = if snap.is_empty() {
            (format!("/1.0/instances/{}", encode(inst)), "instance")
        } else {
            (
                format!("/1.0/instances/{}/snapshots/{}", encode(inst), encode(snap)),
                "instance snapshot",
            )
        };
        client
            .get(&url)
            .map_err(|e| anyhow::anyhow!("Failed checking {what} exists \"local:{n}\": {e:#}"))?;
    }
    for n in names {
        if interactive {
            confirm_delete(n)?;
        }
        if let Some((inst, snap)) = n.split_once('/') {
            client.run(
                "DELETE",
                &format!("/1.0/instances/{}/snapshots/{}", encode(inst), encode(snap)),
                None,
            )?;
            continue;
        }
        let v = client.get(&format!("/1.0/instances/{}", encode(n)))?;
        let code = v["status_code"].as_i64().unwrap_or(0);
        if code != 0 && code != 102 {
            if !force {
                bail!("The instance is currently running, stop it first or pass --force");
            }
            state(client, n, "stop", -1, true)
                .map_err(|e| anyhow::anyhow!("Stopping the instance failed: {e:#}"))?;
            // An ephemeral instance is gone once stopped.
            if v["ephemeral"].as_bool().unwrap_or(false) {
                continue;
            }
        }
        client.run("DELETE", &format!("/1.0/instances/{}", encode(n)), None)?;
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
/// `source` (an instance or `instance/snapshot`) copied as `name`; in a cluster, onto
/// member `member` when given (LXD's `?target=`).
pub fn copy(
    client: &Client,
    source: &str,
    name: &str,
    instance_only: bool,
    member: Option<&str>,
) -> Result<()> {
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
    let path = match member {
        Some(m) => format!("/1.0/instances?target={}", encode(m)),
        None => "/1.0/instances".to_string(),
    };
    client.run("POST", &path, Some(&body))?;
    Ok(())
}
