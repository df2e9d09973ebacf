//! init's requests when no daemon runs: the daemon's router, over the state directory
//! opened in this process, driven without a socket. The same handlers and rules as over
//! the socket; nothing is served or started.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{header, Request};
use serde_json::Value;
use tower::ServiceExt;

use super::{InitError, Transport};
use crate::daemon::Daemon;
use crate::engine::Engine;

/// The API of the state directory, opened in this process.
pub struct LocalApi {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

impl LocalApi {
    /// Opens the state directory (its pools mounted), finishes what a crash interrupted and
    /// makes sure the default profile exists, as a starting daemon does, so init never
    /// builds on half-made state. Networks and proxies are the daemon's, at its next start.
    pub fn open(
        dir: &Path,
        hutchd: PathBuf,
        events: crate::events::EventHub,
    ) -> Result<Self, InitError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(InitError::Runtime)?;
        let open = |source| InitError::Open {
            dir: dir.to_path_buf(),
            source,
        };
        // What the engine spawns while opening belongs to this runtime.
        let _entered = rt.enter();
        let state = Engine::new(Daemon::open(dir, hutchd, events).map_err(open)?);
        state.finish_interrupted().map_err(open)?;
        state.ensure_default_profile().map_err(open)?;
        let router = crate::api::router(state);
        Ok(LocalApi { rt, router })
    }
}

impl Transport for LocalApi {
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), InitError> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .map_err(|_| InitError::BadResponse {
                method: method.to_string(),
                path: path.to_string(),
                status: 0,
            })?;
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .map_err(|_| InitError::BadResponse {
                    method: method.to_string(),
                    path: path.to_string(),
                    status,
                })?;
            Ok((status, bytes.to_vec()))
        })
    }
}
