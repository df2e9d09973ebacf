//! Serving the API on `$HUTCH_DIR/unix.socket` and, when `core.https_address` is set, over
//! HTTPS; and the start-up reconciliation.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use tokio::net::UnixListener;

use crate::daemon::Daemon;

/// Opens the state, reconciles it, and serves until SIGTERM or SIGINT (containers keep
/// running: that is what an upgrade relies on) or a host shutdown (SIGPWR or `hutchd
/// shutdown`: containers are stopped in `boot.stop.priority` order first).
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
    // Exec sessions earlier daemons left running are served again, before clients return.
    crate::api::exec::readopt(&state).await;
    crate::api::console::readopt(&state).await;
    let https = crate::https::HttpsListener::new(
        state
            .tls_server_config()
            .map_err(|e| anyhow::anyhow!(e.chain()))?,
    );
    let ui = crate::ui::UiListener::new();
    let app = crate::api::network_router(state.clone())
        .layer(axum::Extension(https.clone()))
        .layer(axum::Extension(ui.clone()));
    https.set_router(
        app.clone()
            .merge(crate::ui::asset_routes())
            .layer(axum::middleware::from_fn(crate::ui::refuse_cross_origin)),
    );
    ui.set_router(app.clone());
    let address = state
        .https_address()
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    if !address.is_empty() {
        // Before the socket appears, so that whoever waits for it finds HTTPS too. A
        // listener that cannot bind is reported; the socket serves anyway, and setting
        // the address again retries.
        let listener = https.clone();
        let started = tokio::task::spawn_blocking(move || listener.listen(&address)).await?;
        if let Err(e) = started {
            tracing::error!(error = %e.chain(), "HTTPS listener not started");
        }
    }
    let ui_address = state.ui_address().map_err(|e| anyhow::anyhow!(e.chain()))?;
    if !ui_address.is_empty() {
        let listener = ui.clone();
        let started = tokio::task::spawn_blocking(move || listener.listen(&ui_address)).await?;
        if let Err(e) = started {
            tracing::error!(error = %e.chain(), "web UI listener not started");
        }
    }
    // Signal handlers before the socket appears: whoever waits for the socket may signal
    // at once, and an uncaught SIGPWR or SIGTERM would end the daemon without its shutdown.
    let shutdown = shutdown_signal()?;
    let mut power =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGPWR))
            .context("install SIGPWR handler")?;
    let sock = dir.join("unix.socket");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).with_context(|| format!("bind {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("hutch") {
        let _ = nix::unistd::chown(&sock, None, Some(group.gid));
    }
    tracing::info!(socket = %sock.display(), "hutchd listening");
    state.start_background_tasks();
    tokio::pin!(shutdown);
    let host_shutdown = state.exit_requested();
    tokio::pin!(host_shutdown);
    let mut stopped_containers = false;
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
            _ = &mut host_shutdown => {
                stopped_containers = true;
                break;
            }
            _ = power.recv() => {
                tracing::info!("SIGPWR: host shutdown");
                // The API keeps serving while the containers stop; the exit comes from
                // `host_shutdown` above once they are.
                let e = state.clone();
                tokio::spawn(async move {
                    if let Err(err) = e.shutdown_host().await {
                        tracing::error!(error = %err.chain(), "host shutdown failed");
                    }
                });
                continue;
            }
        };
        tokio::spawn(crate::https::serve_connection(
            stream,
            app.clone(),
            crate::auth::Caller::Unix,
        ));
    }
    // What background tasks wrote since the last change ended, before the process goes.
    state.flush_backup_files().await;
    state.make_durable().await;
    if stopped_containers {
        tracing::info!("hutchd stopped after stopping its containers (host shutdown)");
    } else {
        tracing::info!("hutchd stopped; containers keep running");
    }
    Ok(())
}

/// SIGTERM or SIGINT, with both handlers installed now (not at the first poll).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
