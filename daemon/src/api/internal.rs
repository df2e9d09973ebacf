//! `/internal/recover/validate` and `/internal/recover/import` (LXD's paths), for
//! `hutchd recover`: on the unix socket only, since they read and rewrite the database
//! from what the host's disks hold. `/internal/shutdown` (LXD's), for `hutchd shutdown`:
//! the host goes down, so every instance is stopped in order and the daemon exits.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{post, put};
use axum::{Extension, Router};
use hutch_api::recover::RecoverPost;

use super::{parse_json, sync};
use crate::auth::Caller;
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/recover/validate", post(validate))
        .route("/internal/recover/import", post(import))
        .route("/internal/shutdown", put(shutdown))
}

fn local_only(caller: Option<Extension<Caller>>) -> Result<()> {
    match caller.as_deref() {
        Some(Caller::Unix) => Ok(()),
        _ => Err(DaemonError::Forbidden(
            "only available on the unix socket".into(),
        )),
    }
}

async fn validate(
    State(e): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: Bytes,
) -> Result<Response> {
    local_only(caller)?;
    let req: RecoverPost = parse_request(&body)?;
    Ok(sync(e.recover_from_pools(req, false).await?))
}

async fn import(
    State(e): State<AppState>,
    caller: Option<Extension<Caller>>,
    body: Bytes,
) -> Result<Response> {
    local_only(caller)?;
    let req: RecoverPost = parse_request(&body)?;
    Ok(sync(e.recover_from_pools(req, true).await?))
}

/// Answers once every instance is stopped; the daemon exits right after.
async fn shutdown(
    State(e): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Response> {
    local_only(caller)?;
    e.shutdown_host().await?;
    Ok(sync(serde_json::json!({})))
}

/// An empty body asks for every pool.
fn parse_request(body: &[u8]) -> Result<RecoverPost> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RecoverPost::default());
    }
    parse_json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_unix_socket_may_recover() {
        assert!(local_only(Some(Extension(Caller::Unix))).is_ok());
        let tls = Caller::Tls {
            address: "127.0.0.1:8443".parse().unwrap(),
            certificate: None,
        };
        assert!(matches!(
            local_only(Some(Extension(tls))),
            Err(DaemonError::Forbidden(_))
        ));
        assert!(local_only(None).is_err());
    }
}
