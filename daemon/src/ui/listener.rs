//! The web UI's plain-HTTP listener (`core.ui_address`), on loopback only: the UI's files
//! and the whole API behind the [gate](super::gate). Started at daemon start when the key
//! is set, and started, moved or stopped live when it changes; a change that cannot bind
//! is refused and the listener stays as it was.

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::{Arc, OnceLock};

use axum::Router;

use super::sessions::UiSessions;
use crate::auth::Caller;
use crate::error::{DaemonError, Result};
use crate::listener::{LiveListener, OnConnection};

/// Port of `core.ui_address` when it names none.
pub const DEFAULT_PORT: u16 = 8444;

/// The UI listener of one daemon: plain HTTP on loopback over a [`LiveListener`].
pub struct UiListener {
    sessions: Arc<UiSessions>,
    router: OnceLock<Router>,
    live: LiveListener,
}

impl std::fmt::Debug for UiListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiListener").finish_non_exhaustive()
    }
}

impl UiListener {
    /// A listener serving nothing yet. Call inside the runtime.
    pub fn new() -> Arc<UiListener> {
        Arc::new(UiListener {
            sessions: Arc::default(),
            router: OnceLock::new(),
            live: LiveListener::new("web UI listener", bind),
        })
    }

    /// The login tokens and sessions of this daemon's UI.
    pub fn sessions(&self) -> &UiSessions {
        &self.sessions
    }

    /// Serves `api` (the listeners' router) with the UI's files beside it, behind the gate.
    /// Set once, before the first `listen`.
    pub fn set_router(&self, api: Router) {
        let router = api
            .merge(super::asset_routes())
            .layer(axum::middleware::from_fn_with_state(
                self.sessions.clone(),
                super::gate::ui_gate,
            ));
        let _ = self.router.set(router);
    }

    /// Where the listener is bound, if it runs.
    pub fn bound(&self) -> Option<SocketAddr> {
        self.live.bound()
    }

    /// Serves on `address` (`core.ui_address`; "" stops serving), as
    /// [`LiveListener::listen`] does. Blocks while the old loop closes: call off the async
    /// workers.
    pub fn listen(&self, address: &str) -> Result<()> {
        let router = self
            .router
            .get()
            .cloned()
            .ok_or_else(|| DaemonError::BadRequest("the web UI has no API yet".into()))?;
        let on_connection: OnConnection = Arc::new(move |stream, peer| {
            // No session yet: the gate names it once the cookie checks out.
            let caller = Caller::Ui {
                address: peer,
                session: None,
            };
            tokio::spawn(crate::https::serve_connection(
                stream,
                router.clone(),
                caller,
            ));
        });
        self.live.listen(address, on_connection)
    }
}

/// A socket on a loopback `address` (`host`, `host:port`, `[v6]:port`; port 8444 when
/// none). The key's validator refuses other hosts already; this checks again what the
/// name resolved to.
fn bind(address: &str) -> Result<StdListener> {
    let fail = |why: String| {
        DaemonError::BadRequest(format!(
            "Cannot listen for the web UI on {address:?}: {why}"
        ))
    };
    let (host, port) = match hutch_api::server_config::split_host_port(address) {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|e| fail(e.to_string()))?),
        None => (address, DEFAULT_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let candidates: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .filter(|a| a.ip().is_loopback())
        .collect();
    let mut last = "not a loopback address".to_string();
    for candidate in candidates {
        match StdListener::bind(candidate) {
            Ok(l) => return Ok(l),
            Err(e) => last = e.to_string(),
        }
    }
    Err(fail(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_bound() {
        let l = bind("127.0.0.1:0").expect("loopback binds");
        assert!(l.local_addr().unwrap().ip().is_loopback());
        assert!(bind("0.0.0.0:0").is_err());
        assert!(bind("127.0.0.1:x").is_err());
    }
}
