//! Serving the API on `$HUTCH_DIR/unix.socket`, and the start-up reconciliation.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use tokio::net::UnixListener;

use crate::daemon::{AppState, Daemon};

/// Opens the state, reconciles it, and serves until SIGTERM or SIGINT. Containers keep
/// running when the daemon stops.
pub async fn serve(
    dir: &Path,
    hutchd: std::path::PathBuf,
    events: crate::events::EventHub,
) -> anyhow::Result<()> {
    let state = crate::engine::Engine::new(
        Daemon::open(dir, hutchd, events).context("open the state directory")?,
    );
    state
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))
        .context("recover the state directory")?;
    let sock = dir.join("unix.socket");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).with_context(|| format!("bind {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("hutch") {
        let _ = nix::unistd::chown(&sock, None, Some(group.gid));
    }
    tracing::info!(socket = %sock.display(), "hutchd listening");
    state.start_background_tasks();
    let app = crate::api::router(state);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // Upgrades carry the exec, console and event websockets.
            if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("hutchd stopped; containers keep running");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// LXD always has a `default` profile.
pub fn ensure_default_profile(d: &AppState) -> anyhow::Result<()> {
    d.ensure_default_profile()
        .map_err(|e| anyhow::anyhow!(e.chain()))
}

/// `hutchd init --auto`: the default pool (`backend`, else btrfs on a loop file when btrfs
/// is available, else dir), a managed bridge `bridge` (unless `none`) with automatic
/// addresses, and a default profile with a root disk on the pool and `eth0` on the bridge.
pub fn init_auto(
    dir: &Path,
    hutchd: std::path::PathBuf,
    events: crate::events::EventHub,
    backend: Option<String>,
    bridge: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("database"))?;
    let db = crate::db::Db::open(&dir.join("database/local.db"))?;
    if db.pool("default")?.is_none() {
        let driver = backend.unwrap_or_else(|| {
            if btrfs_available() {
                "btrfs".into()
            } else {
                "dir".into()
            }
        });
        let row = crate::engine::pools::prepare_pool(
            dir,
            "default",
            &driver,
            std::collections::BTreeMap::new(),
        )
        .map_err(|e| anyhow::anyhow!(e.chain()))
        .context("create the default storage pool")?;
        db.insert_pool(&row)?;
    }
    drop(db);
    let d = crate::engine::Engine::new(Daemon::open(dir, hutchd, events)?);
    ensure_default_profile(&d)?;
    let mut put = d.db.profile_or_404("default")?;
    put.devices.entry("root".into()).or_insert_with(|| {
        [("type", "disk"), ("path", "/"), ("pool", "default")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    let mut network_note = String::new();
    if bridge != "none" {
        let existing = d.db.network(bridge)?.is_some();
        if !existing
            && crate::engine::network::host_links()?
                .iter()
                .any(|l| l.name == bridge)
        {
            eprintln!(
                "hutchd init: an interface named {bridge:?} exists already; no network is made"
            );
        } else {
            crate::engine::network::init_network(&d, bridge)
                .map_err(|e| anyhow::anyhow!(e.chain()))
                .with_context(|| format!("create network {bridge}"))?;
            put.devices.entry("eth0".into()).or_insert_with(|| {
                [("type", "nic"), ("network", bridge), ("name", "eth0")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            });
            let net = d.db.network_or_404(bridge)?;
            network_note = format!(
                ", network {bridge:?} ({})",
                net.put
                    .config
                    .get("ipv4.address")
                    .cloned()
                    .unwrap_or_default()
            );
        }
    }
    d.db.update_profile("default", &put)?;
    println!(
        "hutch is initialised in {}: storage pool \"default\" ({}){network_note}, profile \"default\"",
        dir.display(),
        d.default_pool()
            .map(|p| p.info().name)
            .unwrap_or("dir")
    );
    Ok(())
}

/// btrfs needs its tools and the kernel's support.
fn btrfs_available() -> bool {
    let tools = std::process::Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let kernel = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("btrfs"))
        || std::path::Path::new("/sys/module/btrfs").exists()
        || std::process::Command::new("modprobe")
            .arg("btrfs")
            .status()
            .is_ok_and(|s| s.success());
    tools && kernel
}
