//! Serving the API on `$HUTCH_DIR/unix.socket`, and the start-up reconciliation.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use tokio::net::UnixListener;

use crate::daemon::Daemon;

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
