//! `hutch copy` and `hutch move` between servers, as lxc/copy.go and lxc/move.go with the
//! Go client's CopyInstance: the source is asked for a migration (`POST` with
//! `migration:true`), the target creates the instance from it, in pull (the target dials
//! the source), push (the source dials the target) or relay mode (this client dials both
//! and carries the websockets between them). Copies within one server stay local copies.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::{json, Map, Value};
use tungstenite::Message;

use super::remote::split;
use crate::http::{encode, Client, Conn};
use crate::progress::Progress;

/// `copy` and `move`'s shared flags.
#[derive(Args)]
pub struct CopyArgs {
    /// [REMOTE:]INSTANCE[/SNAPSHOT].
    pub source: String,
    /// [REMOTE:][NAME]: the source's name when only a remote is given.
    pub target: Option<String>,
    /// Copy a stateful instance stateless.
    #[arg(long)]
    pub stateless: bool,
    /// Copy the instance without its snapshots.
    #[arg(long)]
    pub instance_only: bool,
    /// Perform an incremental copy (copy only).
    #[arg(long)]
    pub refresh: bool,
    /// Transfer mode: pull, push or relay.
    #[arg(long, default_value = "pull")]
    pub mode: String,
    /// Storage pool name.
    #[arg(short, long)]
    pub storage: Option<String>,
    /// Profile to apply to the new instance.
    #[arg(short = 'p', long = "profile")]
    pub profiles: Vec<String>,
    /// Create the instance with no profiles applied.
    #[arg(long)]
    pub no_profiles: bool,
    /// Config key/value to apply to the new instance.
    #[arg(short = 'c', long = "config")]
    pub config: Vec<String>,
    /// In a cluster, the member to copy or move the instance to.
    #[arg(long = "target", value_name = "MEMBER")]
    pub member: Option<String>,
}

/// `hutch copy SRC [DST]`.
pub fn copy(c: &Client, args: &CopyArgs) -> Result<()> {
    if args.refresh && args.no_profiles {
        bail!("--no-profiles cannot be used with --refresh");
    }
    let (src, src_name) = split(c, &args.source)?;
    let (dst, dst_name) = match &args.target {
        Some(t) => split(c, t)?,
        None => (src.clone(), String::new()),
    };
    if src.same_server(&dst) {
        if dst_name.is_empty() {
            bail!("A target name is needed to copy within one server");
        }
        return super::instance::copy(
            &src,
            &src_name,
            &dst_name,
            args.instance_only,
            args.member.as_deref(),
        );
    }
    if args.member.is_some() {
        bail!("--target (a cluster member) copies within one cluster: give a name, no remote");
    }
    let stateful = !args.stateless && !args.refresh;
    transfer(
        &src,
        &src_name,
        &dst,
        &dst_name,
        args,
        stateful,
        args.refresh,
    )?;
    Ok(())
}

/// `hutch move SRC DST`: a rename within one server, else a copy that keeps the volatile
/// keys, then the source deleted (forced, as lxc does).
pub fn move_(c: &Client, args: &CopyArgs) -> Result<()> {
    let (src, src_name) = split(c, &args.source)?;
    if let Some(member) = &args.member {
        // Within a cluster: the server moves it (LXD's `?target=`).
        if args.target.is_some() {
            bail!("--target moves an instance within its cluster: give no destination");
        }
        let body = json!({"name": src_name, "migration": true, "live": false});
        let path = format!(
            "/1.0/instances/{}?target={}",
            encode(&src_name),
            encode(member)
        );
        src.run("POST", &path, Some(&body))?;
        return Ok(());
    }
    let Some(target) = &args.target else {
        return super::instance::rename(&src, &src_name, None, args.storage.as_deref());
    };
    let (dst, dst_name) = split(c, target)?;
    if src.same_server(&dst) {
        if !args.config.is_empty() || !args.profiles.is_empty() || args.no_profiles {
            bail!("Can't override configuration or profiles in local rename");
        }
        let to = (!dst_name.is_empty()).then_some(dst_name.as_str());
        return super::instance::rename(&src, &src_name, to, args.storage.as_deref());
    }
    if src_name.contains('/') {
        bail!("Snapshots can only be moved within their instance");
    }
    let stateful = !args.stateless;
    let running = transfer(&src, &src_name, &dst, &dst_name, args, stateful, true)?;
    super::instance::delete(&src, std::slice::from_ref(&src_name), true, false)
        .map_err(|e| anyhow!("Failed to delete original instance after copying it: {e:#}"))?;
    // A stateless move of a running instance: started again where it now is.
    if running && !stateful {
        let name = if dst_name.is_empty() {
            &src_name
        } else {
            &dst_name
        };
        super::instance::state(&dst, name, "start", -1, false)?;
    }
    Ok(())
}

/// The HTTPS base URLs a server of `client` is reached at by another server, as lxc's
/// GetConnectionInfo lists them: the remote's own URL first, then each address the server
/// advertises (`environment.addresses`, those with a host).
pub fn addresses(client: &Client, server: &Value) -> Result<Vec<String>> {
    let mut out: Vec<String> = client.https_url().map(String::from).into_iter().collect();
    for a in server["environment"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let url = format!("https://{a}");
        if !a.starts_with(':') && !out.contains(&url) {
            out.push(url);
        }
    }
    Ok(out)
}

/// The instance `name` (or snapshot `INSTANCE/SNAP`) of `src` made on `dst` by migration;
/// returns whether the source was running.
fn transfer(
    src: &Client,
    src_name: &str,
    dst: &Client,
    dst_name: &str,
    args: &CopyArgs,
    stateful: bool,
    keep_volatile: bool,
) -> Result<bool> {
    if !["pull", "push", "relay"].contains(&args.mode.as_str()) {
        bail!("Invalid transfer mode: {}", args.mode);
    }
    let (inst, snap) = match src_name.split_once('/') {
        Some((i, s)) => (i, Some(s)),
        None => (src_name, None),
    };
    let inst_url = format!("/1.0/instances/{}", encode(inst));
    let instance = src.get(&inst_url)?;
    let entry = match snap {
        Some(s) => src.get(&format!("{inst_url}/snapshots/{}", encode(s)))?,
        None => instance.clone(),
    };
    let running = snap.is_none() && instance["status"] == "Running";
    let live = stateful && running;
    let name = if dst_name.is_empty() { inst } else { dst_name };
    let instance_only = args.instance_only || snap.is_some();
    let mut req = target_request(&entry, &instance, name, args, keep_volatile)?;
    let mut source = json!({
        "type": "migration", "mode": "pull", "base-image": instance["config"]["volatile.base_image"],
        "live": live, "instance_only": instance_only, "container_only": instance_only,
        "refresh": args.refresh, "allow_inconsistent": false, "certificate": "",
    });
    let migration = json!({
        "name": if snap.is_some() { json!(name) } else { json!("") },
        "migration": true, "live": live, "instance_only": instance_only,
        "container_only": instance_only, "target": null, "pool": "", "project": "",
        "allow_inconsistent": false,
    });
    let src_post = match snap {
        Some(s) => format!("{inst_url}/snapshots/{}", encode(s)),
        None => inst_url.clone(),
    };
    let progress = Progress::new("Transferring instance: %s");
    match args.mode.as_str() {
        "pull" => {
            let src_server = src.get("/1.0")?;
            let op = src.request("POST", &src_post, Some(&migration))?;
            let secrets = string_map(&op.metadata["metadata"])?;
            source["certificate"] = src_server["environment"]["certificate"].clone();
            source["secrets"] = json!(secrets);
            let urls = addresses(src, &src_server)?;
            if urls.is_empty() {
                let _ = src.request("DELETE", &op.operation, None);
                bail!("The source server isn't listening on the network");
            }
            let mut last = None;
            for base in &urls {
                source["operation"] = json!(format!("{base}{}", op.operation));
                req["source"] = source.clone();
                let r = dst
                    .request("POST", "/1.0/instances", Some(&req))
                    .and_then(|env| dst.wait_op_progress(&env, Some(&progress)));
                match r {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                let _ = src.request("DELETE", &op.operation, None);
                return Err(e);
            }
        }
        "push" => {
            let dst_server = dst.get("/1.0")?;
            source["mode"] = json!("push");
            req["source"] = source;
            let target_op = dst.request("POST", "/1.0/instances", Some(&req))?;
            let secrets = string_map(&target_op.metadata["metadata"])?;
            let base = addresses(dst, &dst_server)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("The target server isn't listening on the network"))?;
            let mut post = migration;
            post["target"] = json!({
                "certificate": dst_server["environment"]["certificate"],
                "operation": format!("{base}{}", target_op.operation),
                "secrets": secrets,
            });
            let r = src
                .request("POST", &src_post, Some(&post))
                .and_then(|env| src.wait_op_progress(&env, Some(&progress)));
            if let Err(e) = r {
                let _ = dst.request("DELETE", &target_op.operation, None);
                return Err(e);
            }
            dst.wait_op(&target_op)?;
        }
        _ => {
            let src_op = src.request("POST", &src_post, Some(&migration))?;
            let src_secrets = string_map(&src_op.metadata["metadata"])?;
            source["mode"] = json!("push");
            req["source"] = source;
            let dst_op = match dst.request("POST", "/1.0/instances", Some(&req)) {
                Ok(op) => op,
                Err(e) => {
                    let _ = src.request("DELETE", &src_op.operation, None);
                    return Err(e);
                }
            };
            let dst_secrets = string_map(&dst_op.metadata["metadata"])?;
            relay(
                src,
                &src_op.operation,
                &src_secrets,
                dst,
                &dst_op.operation,
                &dst_secrets,
            )?;
            src.wait_op(&src_op)?;
            dst.wait_op_progress(&dst_op, Some(&progress))?;
        }
    }
    if args.refresh {
        // As lxc: the source's writable config onto the refreshed copy, keeping its
        // idmap.
        let url = format!("/1.0/instances/{}", encode(name));
        let current = dst.get(&url)?;
        let mut put = req.clone();
        if let Some(idmap) = current["config"]["volatile.idmap.next"].as_str() {
            put["config"]["volatile.idmap.next"] = json!(idmap);
        }
        for k in ["name", "source", "type"] {
            put.as_object_mut().map(|m| m.remove(k));
        }
        let _ = dst.run("PUT", &url, Some(&put));
    }
    Ok(running)
}

/// The target's `POST /1.0/instances` for `entry` (an instance or a snapshot), with the
/// command line's overrides, as lxc builds it.
fn target_request(
    entry: &Value,
    instance: &Value,
    name: &str,
    args: &CopyArgs,
    keep_volatile: bool,
) -> Result<Value> {
    let mut config: Map<String, Value> = entry["config"].as_object().cloned().unwrap_or_default();
    let mut profiles = entry["profiles"].clone();
    if !args.profiles.is_empty() {
        profiles = json!(args.profiles);
    } else if args.no_profiles {
        profiles = json!([]);
    }
    for (k, v) in super::pairs(&args.config)? {
        config.insert(k, v);
    }
    let mut devices: Map<String, Value> = entry["devices"].as_object().cloned().unwrap_or_default();
    if let Some(pool) = &args.storage {
        let root = devices
            .iter()
            .find(|(_, d)| d["type"] == "disk" && d["path"] == "/" && d["source"].is_null())
            .map(|(k, _)| k.clone());
        match root {
            Some(k) => devices[&k]["pool"] = json!(pool),
            None => {
                devices.insert(
                    "root".into(),
                    json!({"type": "disk", "path": "/", "pool": pool}),
                );
            }
        }
    }
    if !keep_volatile {
        config.retain(|k, _| !k.starts_with("volatile.") || k == "volatile.base_image");
    }
    config.remove("volatile.last_state.power");
    Ok(json!({
        "name": name,
        "architecture": entry["architecture"],
        "config": config,
        "devices": devices,
        "ephemeral": entry["ephemeral"],
        "profiles": profiles,
        "stateful": entry["stateful"].as_bool().unwrap_or(false),
        "description": instance["description"],
        "type": instance["type"].as_str().filter(|t| !t.is_empty()).unwrap_or("container"),
    }))
}

/// An operation's metadata as the secrets map lxc reads (every value a string).
fn string_map(md: &Value) -> Result<Map<String, Value>> {
    let m = md
        .as_object()
        .ok_or_else(|| anyhow!("The migration operation has no secrets"))?;
    for (k, v) in m {
        if !v.is_string() {
            bail!("The migration secret {k:?} is not a string");
        }
    }
    Ok(m.clone())
}

/// Relay mode: every websocket of the target's operation joined to the source's of the
/// same name (control first), messages carried both ways as they are, until both end.
fn relay(
    src: &Client,
    src_op: &str,
    src_secrets: &Map<String, Value>,
    dst: &Client,
    dst_op: &str,
    dst_secrets: &Map<String, Value>,
) -> Result<()> {
    let mut names: Vec<&String> = dst_secrets.keys().collect();
    names.sort_by_key(|n| (n.as_str() != "control", n.as_str().to_string()));
    let mut threads = Vec::new();
    for name in names {
        let s = src_secrets
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("The source has no {name} websocket"))?;
        let d = dst_secrets[name].as_str().unwrap_or_default();
        let a = src.websocket(&format!("{src_op}/websocket?secret={}", encode(s)))?;
        let b = dst.websocket(&format!("{dst_op}/websocket?secret={}", encode(d)))?;
        threads.push(std::thread::spawn(move || bridge(a, b)));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Carries messages between two websockets until either closes: wakes when either socket
/// has data, then carries every message ready on each side (those decoded above the socket
/// included, which do not wake poll), a short read timeout saying when a side has no more.
fn bridge(mut a: tungstenite::WebSocket<Conn>, mut b: tungstenite::WebSocket<Conn>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let tick = Some(Duration::from_millis(1));
    if a.get_ref().set_read_timeout(tick).is_err() || b.get_ref().set_read_timeout(tick).is_err() {
        return;
    }
    let (Ok(fa), Ok(fb)) = (
        a.get_ref().as_fd().try_clone_to_owned(),
        b.get_ref().as_fd().try_clone_to_owned(),
    ) else {
        return;
    };
    let idle = |e: &tungstenite::Error| {
        matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    };
    // The ready messages of `from` (64 at most, so neither way starves) sent on `to`:
    // Some(whether more may be ready), None once either side ended.
    let drain = |from: &mut tungstenite::WebSocket<Conn>, to: &mut tungstenite::WebSocket<Conn>| {
        for _ in 0..64 {
            match from.read() {
                Ok(Message::Close(frame)) => {
                    let _ = to.close(frame);
                    let _ = to.flush();
                    return None;
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(m) => {
                    if to.send(m).is_err() {
                        return None;
                    }
                }
                Err(e) if idle(&e) => return Some(false),
                Err(_) => {
                    let _ = to.close(None);
                    let _ = to.flush();
                    return None;
                }
            }
        }
        Some(true)
    };
    let mut busy = false;
    loop {
        let mut fds = [
            PollFd::new(fa.as_fd(), PollFlags::POLLIN),
            PollFd::new(fb.as_fd(), PollFlags::POLLIN),
        ];
        // No wait while messages may still be ready from the last round.
        let wait = if busy { 0u16 } else { 200 };
        match poll(&mut fds, PollTimeout::from(wait)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        let (Some(ab), Some(ba)) = (drain(&mut a, &mut b), drain(&mut b, &mut a)) else {
            return;
        };
        busy = ab || ba;
    }
}
