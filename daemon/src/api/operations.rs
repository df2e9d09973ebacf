//! `/1.0/operations`: list, get, wait, cancel, and the operation websockets.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::sync;
use crate::auth::Trust;
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/operations", get(list))
        .route("/1.0/operations/:id", get(one).delete(cancel))
        .route("/1.0/operations/:id/wait", get(wait))
        .route("/1.0/operations/:id/websocket", get(websocket))
}

fn forbidden() -> DaemonError {
    DaemonError::Forbidden("not authorized".into())
}

fn not_found() -> DaemonError {
    DaemonError::NotFound("Operation not found".into())
}

async fn list(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    member: Option<axum::Extension<super::forward::FromMember>>,
) -> Response {
    let full = super::recursion(&q) > 0;
    let mut by_status: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for op in d.operations().all() {
        let snap = op.snapshot();
        let v = if full {
            serde_json::to_value(&snap).unwrap_or_default()
        } else {
            format!("/1.0/operations/{}", snap.id).into()
        };
        by_status
            .entry(snap.status.to_lowercase())
            .or_default()
            .push(v);
    }
    // In a cluster, every member's (a member asking lists its own).
    if member.is_none() && d.membership().is_some() {
        let path = format!("/1.0/operations?recursion={}", u8::from(full));
        return sync(d.merge_cluster_operations(&path, by_status).await);
    }
    sync(by_status)
}

async fn one(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    Ok(sync(op.snapshot()))
}

/// Tokens are revoked by cancelling them; other operations cannot be cancelled.
async fn cancel(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    // Work that cleans up first (a migration), then operations a cancel ends (tokens).
    if op.cancel_work() || d.operations().cancel(&op) {
        return Ok(super::empty());
    }
    if op.snapshot().status_code >= 200 {
        return Err(DaemonError::BadRequest(
            "Only running operations can be cancelled".into(),
        ));
    }
    Err(DaemonError::BadRequest(
        "This operation can't be cancelled".into(),
    ))
}

/// Reached untrusted too (a migration peer), with the operation's `secret`.
async fn wait(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    trust: Option<axum::Extension<Trust>>,
) -> Result<Response> {
    let trusted = trust.is_some_and(|axum::Extension(t)| t.is_trusted());
    let secret = q.get("secret").map(String::as_str).unwrap_or_default();
    if !trusted && secret.is_empty() {
        return Err(forbidden());
    }
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    if !secret.is_empty() && op.snapshot().metadata["secret"].as_str() != Some(secret) {
        return Err(forbidden());
    }
    let timeout = q
        .get("timeout")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(-1);
    op.wait((timeout >= 0).then(|| Duration::from_secs(timeout as u64)))
        .await;
    Ok(sync(op.snapshot()))
}

async fn websocket(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response> {
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    let secret = q.get("secret").cloned().unwrap_or_default();
    let sender = op.take_socket(&secret).ok_or_else(forbidden)?;
    Ok(ws
        .on_upgrade(move |socket| async move {
            let _ = sender.send(socket);
        })
        .into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn operations_are_listed_waited_on_and_missing_ones_are_404() {
        let api = TestApi::new().await;
        for (method, uri) in [
            (Method::GET, "/1.0/operations/none"),
            (Method::DELETE, "/1.0/operations/none"),
            (Method::GET, "/1.0/operations/none/wait"),
        ] {
            let (status, body) = api.call(method, uri, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
            assert_eq!(body["error"], "Operation not found");
        }
        // A failing task: listed under its status, waited on, not cancellable.
        let (status, accepted) = api.call(Method::POST, "/1.0/images", Some(json!({}))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let op = api.wait(&accepted).await;
        assert_eq!(op["status"], "Failure");
        let url = accepted["operation"].as_str().unwrap().to_string();
        let (status, one) = api.call(Method::GET, &url, None).await;
        assert_eq!(
            (status, one["metadata"]["id"].clone()),
            (StatusCode::OK, op["id"].clone())
        );
        let (_, list) = api.call(Method::GET, "/1.0/operations", None).await;
        assert_eq!(list["metadata"]["failure"], json!([url.clone()]));
        let (status, body) = api.call(Method::DELETE, &url, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}
